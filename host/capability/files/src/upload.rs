//! Uploads: a CSV or NDJSON file validated, typed and split by an optional
//! partition column in one streaming pass (UTF-8, header, column count,
//! record size, partition names), written to a new generation of the
//! dataset with every file fsynced, then published by one atomic rename (see
//! [`super::generations`]). A refused or interrupted upload leaves the
//! dataset as it was.
//!
//! Memory does not grow with the file: one record (at most
//! [`MAX_RECORD_BYTES`]), one type per column (at most [`MAX_COLUMNS`]), the
//! partition names (at most [`MAX_PARTITIONS`]), rows waiting to be written
//! to their partitions (at most `BUFFERED` bytes together) and at most
//! `OPEN_PARTITIONS` open files.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use silo_types::text::{infer_kind, json_cell, schema_json, unify};
use silo_types::{Column, ColumnType};

use super::generations::{self, Partial};
use super::{FilesStore, SCHEMA_DIR, WHOLE};
use silo_core::error::{Error, Result};

/// The largest upload accepted by default.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// The largest record (a CSV row or an NDJSON line) accepted.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;
/// The most columns a file may have.
pub const MAX_COLUMNS: usize = 1_600;
/// The most partitions one upload may create by default.
pub const MAX_PARTITIONS: usize = 10_000;
/// Partition files kept open at once while splitting (the rest are
/// reopened to append when their next row comes).
const OPEN_PARTITIONS: usize = 64;

/// Told `(bytes read, bytes in the file)` while a large file is parsed.
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// What to upload.
#[derive(Clone)]
pub struct Upload<'a> {
    /// Target dataset (a plain name).
    pub dataset: &'a str,
    /// The file; `.csv` or `.ndjson`/`.jsonl` by extension.
    pub file: &'a Path,
    /// Split into one directory per value of this column.
    pub partition_by: Option<&'a str>,
    /// Refuse larger files.
    pub max_bytes: u64,
    /// Refuse more partitions (default [`MAX_PARTITIONS`]).
    pub max_partitions: usize,
    /// Called about every MiB while parsing (a progress bar).
    pub progress: Option<Progress<'a>>,
}

/// How often parsing reports progress.
const PROGRESS_EVERY: u64 = 1 << 20;

/// How long a replaced generation is kept for fetches still reading it: a
/// fetch never outlives this (its deadline is shorter).
pub fn retire_grace(limits: &silo_core::limits::Limits) -> Duration {
    limits.fetch_timeout.saturating_add(Duration::from_secs(60))
}

/// Removes staged request bodies nobody holds any more (each is locked by
/// its request while in use; a crash leaves it unlocked).
pub fn sweep_staging(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let unheld = File::open(&path).is_ok_and(|f| f.try_lock().is_ok());
        if unheld {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// What an upload wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    /// Rows written.
    pub rows: u64,
    /// The inferred columns.
    pub columns: Vec<Column>,
    /// Partition directory names, sorted.
    pub partitions: Vec<String>,
}

/// Whether `name` can be a directory name under the data dir: letters,
/// digits, `_`, `-`, `.`, not starting with `.`, at most 128 bytes.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

enum Format {
    Csv,
    Ndjson,
}

/// Validates and stores `upload` in `store` as the dataset's new data. One
/// upload per dataset at a time: another one in progress is a conflict.
/// Replaced data is removed once `grace` has passed (see [`retire_grace`]).
pub fn upload(store: &FilesStore, upload: &Upload<'_>) -> Result<Uploaded> {
    upload_with_grace(store, upload, Duration::from_secs(180))
}

/// [`upload`], keeping replaced data for `grace`.
pub fn upload_with_grace(
    store: &FilesStore,
    upload: &Upload<'_>,
    grace: Duration,
) -> Result<Uploaded> {
    store.dataset_dir(upload.dataset).map_err(|_| {
        Error::Config(format!(
            "dataset name `{}` must be letters, digits, `_`, `-` or `.`",
            upload.dataset
        ))
    })?;
    let format = match upload.file.extension().and_then(|e| e.to_str()) {
        Some("csv") => Format::Csv,
        Some("ndjson" | "jsonl") => Format::Ndjson,
        _ => {
            return Err(Error::Config(
                "upload a .csv or .ndjson (.jsonl) file".into(),
            ));
        }
    };
    let bad_file = |e: std::io::Error| Error::Config(format!("{}: {e}", upload.file.display()));
    let file = File::open(upload.file).map_err(bad_file)?;
    let total = file.metadata().map_err(bad_file)?.len();
    if total > upload.max_bytes {
        return Err(Error::Limit(format!(
            "the file has {total} bytes; uploads are limited to {}",
            upload.max_bytes
        )));
    }
    let org_dir = store.org_dir();
    create_private_dir(&org_dir)?;
    let lock = generations::lock(&org_dir, upload.dataset)?;
    lock.sweep(&org_dir, upload.dataset, grace);
    let partial = lock.begin()?;
    let mut reported = 0;
    let mut tick = |done: u64| {
        if let Some(report) = upload.progress
            && done > reported
            && (done >= reported + PROGRESS_EVERY || done == total)
        {
            reported = done;
            report(done, total);
        }
    };
    let input = Counted::new(file, upload.max_bytes);
    let mut split = Split::new(&partial, upload.partition_by, upload.max_partitions);
    match format {
        Format::Csv => read_csv(input, &mut split, &mut tick)?,
        Format::Ndjson => read_ndjson(input, &mut split, &mut tick)?,
    }
    let done = split.finish()?;
    lock.publish(&org_dir, upload.dataset, partial)?;
    Ok(done)
}

/// The file as read, counting bytes (progress) and refusing a record that
/// grows past [`MAX_RECORD_BYTES`] before the parser buffers it whole.
struct Counted {
    inner: File,
    read: std::rc::Rc<std::cell::Cell<u64>>,
    record_start: std::rc::Rc<std::cell::Cell<u64>>,
    max: u64,
}

/// The read error of an oversized record, found again to say so.
#[derive(Debug, thiserror::Error)]
#[error("a record is larger than {MAX_RECORD_BYTES} bytes")]
struct RecordTooLarge;

/// The read error of a file that grew past the limit while being read.
#[derive(Debug, thiserror::Error)]
#[error("the file grew past the upload limit while being read")]
struct FileTooLarge;

impl Counted {
    fn new(inner: File, max: u64) -> Counted {
        Counted {
            inner,
            read: Default::default(),
            record_start: Default::default(),
            max,
        }
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Parsers read ahead by at most a buffer: allow that past a record.
        if self.read.get() - self.record_start.get() > MAX_RECORD_BYTES + (64 << 10) {
            return Err(std::io::Error::other(RecordTooLarge));
        }
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        if self.read.get() > self.max {
            return Err(std::io::Error::other(FileTooLarge));
        }
        Ok(n)
    }
}

/// A refusal for an I/O error met while reading the file.
fn refused_read(e: &std::io::Error, line: u64) -> Error {
    match e.get_ref() {
        Some(inner) if inner.is::<RecordTooLarge>() => Error::Limit(format!(
            "line {line}: a record is larger than {} MiB",
            MAX_RECORD_BYTES >> 20
        )),
        Some(inner) if inner.is::<FileTooLarge>() => Error::Limit(inner.to_string()),
        _ => Error::Config(format!("reading the upload: {e}")),
    }
}

fn read_csv(input: Counted, split: &mut Split<'_>, tick: &mut dyn FnMut(u64)) -> Result<()> {
    let read = input.read.clone();
    let record_start = input.record_start.clone();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| refused_csv(&e))?
        .iter()
        .map(str::to_owned)
        .collect();
    split.header(header)?;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(refused_csv(&e)),
        }
        let line = record.position().map_or(0, csv::Position::line);
        if record.as_byte_record().as_slice().len() as u64 > MAX_RECORD_BYTES {
            return Err(Error::Limit(format!(
                "line {line}: a record is larger than {} MiB",
                MAX_RECORD_BYTES >> 20
            )));
        }
        split.row(record.iter(), line)?;
        let at = reader.position().byte();
        record_start.set(at);
        tick(at);
    }
    tick(read.get());
    Ok(())
}

fn refused_csv(e: &csv::Error) -> Error {
    let line = e.position().map_or(1, csv::Position::line);
    let reason = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, the header has {expected_len}"),
        csv::ErrorKind::Io(io) => return refused_read(io, line),
        _ => e.to_string(),
    };
    Error::Config(format!("line {line}: {reason}"))
}

fn read_ndjson(input: Counted, split: &mut Split<'_>, tick: &mut dyn FnMut(u64)) -> Result<()> {
    let read = input.read.clone();
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut number = 0u64;
    let mut header: Option<Vec<String>> = None;
    loop {
        line.clear();
        number += 1;
        let n = (&mut reader)
            .take(MAX_RECORD_BYTES + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| refused_read(&e, number))?;
        if n == 0 {
            break;
        }
        if n as u64 > MAX_RECORD_BYTES {
            return Err(Error::Limit(format!(
                "line {number}: a record is larger than {} MiB",
                MAX_RECORD_BYTES >> 20
            )));
        }
        offset += n as u64;
        reader.get_ref().record_start.set(offset);
        tick(offset);
        let at = |m: String| Error::Config(format!("line {number}: {m}"));
        let text = std::str::from_utf8(&line).map_err(|_| at("not valid UTF-8".into()))?;
        if text.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| at(format!("not JSON ({e})")))?;
        let object = value
            .as_object()
            .ok_or_else(|| at("each line must be a JSON object".into()))?;
        let names = match &header {
            Some(h) => h,
            None => {
                let h: Vec<String> = object.keys().cloned().collect();
                split.header(h.clone())?;
                header.insert(h)
            }
        };
        if let Some(extra) = object.keys().find(|k| !names.contains(k)) {
            return Err(at(format!("field `{extra}` is not in the first line")));
        }
        let cells: Vec<String> = names
            .iter()
            .map(|h| object.get(h).map(json_cell).unwrap_or_default())
            .collect();
        split.row(cells.iter().map(String::as_str), number)?;
    }
    if header.is_none() {
        return Err(Error::Config("line 1: the file is empty".into()));
    }
    tick(read.get());
    Ok(())
}

/// Rows routed to their partitions' files as they stream, and the columns'
/// types inferred on the way. Each partition's rows gather in a buffer that
/// is written to its file a chunk at a time, all buffers together held under
/// [`BUFFERED`]: many partitions cost memory within that bound, not a file
/// reopened per row.
struct Split<'a> {
    partial: &'a Partial,
    partition_by: Option<&'a str>,
    max_partitions: usize,
    header: Vec<String>,
    partition_col: Option<usize>,
    kinds: Vec<Option<ColumnType>>,
    nullable: Vec<bool>,
    rows: u64,
    /// Every partition seen.
    partitions: HashMap<String, Partition>,
    /// The open files by last use, to close the least recently used.
    open: std::collections::BTreeMap<u64, String>,
    clock: u64,
    /// Encodes one row at a time into `encoded`.
    scratch: csv::Writer<Sink>,
    encoded: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    /// Bytes reserved by every partition's buffer together.
    buffered: usize,
}

/// One partition being written.
#[derive(Default)]
struct Partition {
    /// Its file while open, and when it was last written.
    file: Option<File>,
    used: u64,
    /// Encoded rows not yet written (the header first, for a new one).
    pending: Vec<u8>,
    /// Whether its file exists yet.
    created: bool,
}

/// Where the row encoder writes: a buffer [`Split`] reads back.
struct Sink(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A partition's rows are written to its file once this many bytes gather.
const PARTITION_CHUNK: usize = 256 << 10;
/// Bytes of rows held for all partitions together; past it, every buffer
/// is written out.
const BUFFERED: usize = 32 << 20;

impl<'a> Split<'a> {
    fn new(
        partial: &'a Partial,
        partition_by: Option<&'a str>,
        max_partitions: usize,
    ) -> Split<'a> {
        let encoded: std::rc::Rc<std::cell::RefCell<Vec<u8>>> = std::rc::Rc::default();
        Split {
            partial,
            partition_by,
            max_partitions,
            header: Vec::new(),
            partition_col: None,
            kinds: Vec::new(),
            nullable: Vec::new(),
            rows: 0,
            partitions: HashMap::new(),
            open: std::collections::BTreeMap::new(),
            clock: 0,
            scratch: csv::Writer::from_writer(Sink(encoded.clone())),
            encoded,
            buffered: 0,
        }
    }

    fn header(&mut self, header: Vec<String>) -> Result<()> {
        if header.is_empty() || header.iter().all(String::is_empty) {
            return Err(Error::Config("line 1: the file is empty".into()));
        }
        if header.len() > MAX_COLUMNS {
            return Err(Error::Limit(format!(
                "line 1: {} columns; at most {MAX_COLUMNS} are accepted",
                header.len()
            )));
        }
        for (i, name) in header.iter().enumerate() {
            if name.is_empty() || header[..i].contains(name) {
                return Err(Error::Config(format!(
                    "line 1: column names must be unique and non-empty (`{}`)",
                    silo_core::text::bounded_text(name, 64)
                )));
            }
        }
        self.partition_col = match self.partition_by {
            Some(p) => Some(header.iter().position(|h| h == p).ok_or_else(|| {
                Error::Config(format!("partition column `{p}` is not in the header"))
            })?),
            None => None,
        };
        self.kinds = vec![None; header.len()];
        self.nullable = vec![false; header.len()];
        self.header = header;
        Ok(())
    }

    fn row<'r>(&mut self, cells: impl Iterator<Item = &'r str> + Clone, line: u64) -> Result<()> {
        let mut key = WHOLE;
        for (i, cell) in cells.clone().enumerate() {
            match infer_kind(cell) {
                None => self.nullable[i] = true,
                Some(k) => self.kinds[i] = Some(self.kinds[i].map_or(k, |prev| unify(prev, k))),
            }
            if Some(i) == self.partition_col {
                if !is_safe_name(cell) || cell == WHOLE {
                    return Err(Error::Config(format!(
                        "line {line}: partition value `{}` must be letters, digits, `_`, `-` \
                         or `.`",
                        silo_core::text::bounded_text(cell, 64)
                    )));
                }
                key = cell;
            }
        }
        self.encode(cells)?;
        let key = key.to_owned();
        self.buffer(&key)?;
        self.rows += 1;
        Ok(())
    }

    /// One row as CSV bytes, in `self.encoded` until the next.
    fn encode<'r>(&mut self, cells: impl Iterator<Item = &'r str>) -> Result<()> {
        self.encoded.borrow_mut().clear();
        self.scratch
            .write_record(cells)
            .map_err(|e| write_failed(&e))?;
        self.scratch
            .flush()
            .map_err(|e| Error::Internal(format!("encoding a row: {e}")))
    }

    /// Adds the row in `self.encoded` to partition `key`'s buffer (a new
    /// partition starts with the header), writing buffers out past their
    /// chunk or the budget.
    fn buffer(&mut self, key: &str) -> Result<()> {
        if !self.partitions.contains_key(key) {
            if self.partitions.len() >= self.max_partitions {
                return Err(Error::Limit(format!(
                    "more than {} partitions; partition by a column with fewer values",
                    self.max_partitions
                )));
            }
            let row = std::mem::take(&mut *self.encoded.borrow_mut());
            let header = self.header.clone();
            self.encode(header.iter().map(String::as_str))?;
            let header = std::mem::replace(&mut *self.encoded.borrow_mut(), row);
            self.buffered += header.capacity();
            self.partitions.insert(
                key.to_owned(),
                Partition {
                    pending: header,
                    ..Partition::default()
                },
            );
        }
        let partition = self
            .partitions
            .get_mut(key)
            .ok_or_else(|| Error::Internal("a partition went missing".into()))?;
        // Written out before the row would take the buffer past its chunk,
        // so a buffer never grows beyond it (rows larger than a chunk go
        // out alone).
        if !partition.pending.is_empty()
            && partition.pending.len() + self.encoded.borrow().len() > PARTITION_CHUNK
        {
            self.spill(key)?;
        }
        let partition = self
            .partitions
            .get_mut(key)
            .ok_or_else(|| Error::Internal("a partition went missing".into()))?;
        // Memory is what is reserved, not what is used.
        let before = partition.pending.capacity();
        partition.pending.extend_from_slice(&self.encoded.borrow());
        self.buffered += partition.pending.capacity() - before;
        if self.buffered >= BUFFERED {
            let keys: Vec<String> = self
                .partitions
                .iter()
                .filter(|(_, p)| !p.pending.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                self.spill(&k)?;
            }
        }
        Ok(())
    }

    /// Writes partition `key`'s buffer to its file (opened, created or
    /// reopened to append, as needed) and frees the buffer.
    fn spill(&mut self, key: &str) -> Result<()> {
        use std::io::Write;
        self.clock += 1;
        let clock = self.clock;
        let dir = self.partial.dir().join(key);
        let path = dir.join("data.csv");
        let (is_open, created) = match self.partitions.get(key) {
            Some(p) => (p.file.is_some(), p.created),
            None => return Err(Error::Internal("a partition went missing".into())),
        };
        let file = if is_open {
            None
        } else {
            if self.open.len() >= OPEN_PARTITIONS {
                self.close_least_recent()?;
            }
            Some(if created {
                append(&path)?
            } else {
                create_private_dir(&dir)?;
                create(&path)?
            })
        };
        let partition = self
            .partitions
            .get_mut(key)
            .ok_or_else(|| Error::Internal("a partition went missing".into()))?;
        if let Some(file) = file {
            partition.file = Some(file);
            partition.created = true;
        } else {
            self.open.remove(&partition.used);
        }
        self.open.insert(clock, key.to_owned());
        partition.used = clock;
        let pending = std::mem::take(&mut partition.pending);
        self.buffered -= pending.capacity();
        partition
            .file
            .as_mut()
            .ok_or_else(|| Error::Internal("a partition file went missing".into()))?
            .write_all(&pending)
            .map_err(|e| failed(&path, e))
    }

    fn close_least_recent(&mut self) -> Result<()> {
        let Some((_, key)) = self.open.pop_first() else {
            return Ok(());
        };
        // Closed now (its bytes are written), fsynced with the rest at the
        // end.
        if let Some(p) = self.partitions.get_mut(&key) {
            p.file = None;
        }
        Ok(())
    }

    /// Flushes and fsyncs every partition, writes the schema, and says what
    /// was written.
    fn finish(mut self) -> Result<Uploaded> {
        if self.header.is_empty() {
            return Err(Error::Config("line 1: the file is empty".into()));
        }
        let keys: Vec<String> = self.partitions.keys().cloned().collect();
        let mut names = Vec::with_capacity(keys.len());
        for name in keys {
            self.spill(&name)?;
            let dir = self.partial.dir().join(&name);
            let path = dir.join("data.csv");
            match self.partitions.get_mut(&name).and_then(|p| p.file.take()) {
                Some(file) => file.sync_all(),
                None => File::open(&path).and_then(|f| f.sync_all()),
            }
            .map_err(|e| failed(&path, e))?;
            sync(&dir)?;
            names.push(name);
        }
        names.sort();
        let columns: Vec<Column> = self
            .header
            .iter()
            .zip(self.kinds)
            .zip(self.nullable)
            .map(|((name, kind), nullable)| Column {
                name: name.clone(),
                kind: kind.unwrap_or(ColumnType::Text),
                nullable,
            })
            .collect();
        let schema = self.partial.dir().join(SCHEMA_DIR);
        create_private_dir(&schema)?;
        write_synced(
            &schema.join("columns.json"),
            schema_json(&columns).to_string().as_bytes(),
        )?;
        if let Some(p) = self.partition_by {
            write_synced(&schema.join("partition_by"), p.as_bytes())?;
        }
        sync(&schema)?;
        sync(self.partial.dir())?;
        Ok(Uploaded {
            rows: self.rows,
            columns,
            partitions: names,
        })
    }
}

fn write_failed(e: &csv::Error) -> Error {
    Error::Internal(format!("writing a partition: {e}"))
}

fn failed(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{}: {e}", path.display()))
}

fn create(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed(path, e))
}

fn append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| failed(path, e))
}

fn sync(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(dir, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| Error::Internal(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// A directory (and its parents) only this user can enter.
pub(super) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))
}

/// A number unique in this process, for temporary names.
pub(super) fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
