//! Uploads: a CSV or NDJSON file validated whole (UTF-8, header, column
//! count, size), typed, split by an optional partition column, written to a
//! staging directory with every file fsynced, then swapped in by rename. A
//! refused or interrupted upload leaves the dataset as it was.
use std::io::Write;
use std::path::{Path, PathBuf};

use silo_types::text::{infer_kind, json_cell, schema_json, unify};
use silo_types::{Column, ColumnType};

use super::{FilesStore, SCHEMA_DIR, WHOLE};
use crate::error::{Error, Result};

/// The largest upload accepted by default.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

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
    /// Called about every MiB while parsing (a progress bar).
    pub progress: Option<Progress<'a>>,
}

/// How often parsing reports progress.
const PROGRESS_EVERY: u64 = 1 << 20;

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

/// One parsed file: header and rows of cells (text form).
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Validates and stores `upload` in `store`, replacing the dataset's data.
pub fn upload(store: &FilesStore, upload: &Upload<'_>) -> Result<Uploaded> {
    let dataset_dir = store.dataset_dir(upload.dataset).map_err(|_| {
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
    let size = std::fs::metadata(upload.file).map_err(bad_file)?.len();
    if size > upload.max_bytes {
        return Err(Error::Limit(format!(
            "the file has {size} bytes; uploads are limited to {}",
            upload.max_bytes
        )));
    }
    let bytes = std::fs::read(upload.file).map_err(bad_file)?;
    let total = bytes.len() as u64;
    let mut reported = 0;
    let mut tick = |done: u64| {
        if let Some(report) = upload.progress
            && (done >= reported + PROGRESS_EVERY || done == total)
        {
            reported = done;
            report(done, total);
        }
    };
    let table = match format {
        Format::Csv => parse_csv(&bytes, &mut tick)?,
        Format::Ndjson => parse_ndjson(&bytes, &mut tick)?,
    };
    let columns = infer_columns(&table);
    let partition_col = match upload.partition_by {
        Some(p) => Some(table.header.iter().position(|h| h == p).ok_or_else(|| {
            Error::Config(format!("partition column `{p}` is not in the header"))
        })?),
        None => None,
    };
    // Group rows by partition, refusing values that are not safe names.
    let mut partitions: std::collections::BTreeMap<String, Vec<&Vec<String>>> =
        std::collections::BTreeMap::new();
    for (i, row) in table.rows.iter().enumerate() {
        let key = match partition_col {
            Some(c) => {
                let v = &row[c];
                if !is_safe_name(v) || v == WHOLE {
                    return Err(Error::Config(format!(
                        "line {}: partition value `{v}` must be letters, digits, `_`, `-` or `.`",
                        i + 2
                    )));
                }
                v.clone()
            }
            None => WHOLE.to_owned(),
        };
        partitions.entry(key).or_default().push(row);
    }

    // Stage everything beside the dataset, then swap it in.
    let org_dir = store.org_dir();
    create_private_dir(&org_dir)?;
    let staging = org_dir.join(format!(
        ".upload-{}-{}-{}",
        upload.dataset,
        std::process::id(),
        unique()
    ));
    let result = (|| {
        create_private_dir(&staging)?;
        for (name, rows) in &partitions {
            let dir = staging.join(name);
            create_private_dir(&dir)?;
            write_synced(&dir.join("data.csv"), &csv_bytes(&table.header, rows)?)?;
        }
        let schema = staging.join(SCHEMA_DIR);
        create_private_dir(&schema)?;
        write_synced(
            &schema.join("columns.json"),
            schema_json(&columns).to_string().as_bytes(),
        )?;
        if let Some(p) = upload.partition_by {
            write_synced(&schema.join("partition_by"), p.as_bytes())?;
        }
        swap_in(&staging, &dataset_dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    Ok(Uploaded {
        rows: table.rows.len() as u64,
        columns,
        partitions: partitions.into_keys().collect(),
    })
}

fn parse_csv(bytes: &[u8], tick: &mut dyn FnMut(u64)) -> Result<Table> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| refused_csv(&e))?
        .iter()
        .map(str::to_owned)
        .collect();
    check_header(&header)?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| refused_csv(&e))?;
        if let Some(p) = record.position() {
            tick(p.byte());
        }
        rows.push(record.iter().map(str::to_owned).collect());
    }
    tick(bytes.len() as u64);
    Ok(Table { header, rows })
}

fn refused_csv(e: &csv::Error) -> Error {
    let line = e.position().map_or(1, csv::Position::line);
    let reason = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, the header has {expected_len}"),
        _ => e.to_string(),
    };
    Error::Config(format!("line {line}: {reason}"))
}

fn parse_ndjson(bytes: &[u8], tick: &mut dyn FnMut(u64)) -> Result<Table> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        Error::Config(format!("line {line}: not valid UTF-8"))
    })?;
    let mut header: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let mut offset = 0u64;
    for (i, line) in text.lines().enumerate() {
        offset += line.len() as u64 + 1;
        tick(offset.min(bytes.len() as u64));
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| Error::Config(format!("line {}: {m}", i + 1));
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON ({e})")))?;
        let object = value
            .as_object()
            .ok_or_else(|| at("each line must be a JSON object".into()))?;
        if header.is_empty() {
            header = object.keys().cloned().collect();
            check_header(&header)?;
        }
        if let Some(extra) = object.keys().find(|k| !header.contains(k)) {
            return Err(at(format!("field `{extra}` is not in the first line")));
        }
        rows.push(
            header
                .iter()
                .map(|h| object.get(h).map(json_cell).unwrap_or_default())
                .collect(),
        );
    }
    if header.is_empty() {
        return Err(Error::Config("line 1: the file is empty".into()));
    }
    Ok(Table { header, rows })
}

fn check_header(header: &[String]) -> Result<()> {
    for (i, name) in header.iter().enumerate() {
        if name.is_empty() || header[..i].contains(name) {
            return Err(Error::Config(format!(
                "line 1: column names must be unique and non-empty (`{name}`)"
            )));
        }
    }
    Ok(())
}

fn infer_columns(table: &Table) -> Vec<Column> {
    table
        .header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut kind: Option<ColumnType> = None;
            let mut nullable = false;
            for row in &table.rows {
                match infer_kind(&row[i]) {
                    None => nullable = true,
                    Some(k) => kind = Some(kind.map_or(k, |prev| unify(prev, k))),
                }
            }
            Column {
                name: name.clone(),
                kind: kind.unwrap_or(ColumnType::Text),
                nullable,
            }
        })
        .collect()
}

fn csv_bytes(header: &[String], rows: &[&Vec<String>]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| Error::Internal(e.to_string());
    w.write_record(header).map_err(io)?;
    for row in rows {
        w.write_record(row.iter()).map_err(io)?;
    }
    w.into_inner().map_err(|e| Error::Internal(e.to_string()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
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

/// Replaces `target` by `staging`: the old data moves aside, the new takes
/// its name, then the old is removed. Both renames stay in one directory.
fn swap_in(staging: &Path, target: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::Internal(format!("{}: {e}", target.display()));
    let parent = target.parent().map(PathBuf::from).unwrap_or_default();
    let old = parent.join(format!(".replaced-{}-{}", std::process::id(), unique()));
    let had_old = target.exists();
    if had_old {
        std::fs::rename(target, &old).map_err(io)?;
    }
    if let Err(e) = std::fs::rename(staging, target) {
        if had_old {
            let _ = std::fs::rename(&old, target);
        }
        return Err(io(e));
    }
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
