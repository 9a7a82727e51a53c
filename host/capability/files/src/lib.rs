//! The files capability: uploaded datasets on local disk, segregated by
//! directory (`<data_dir>/<org>/<dataset>/<partition>/`). A connector reads
//! them through WASI, and never a byte of a row the embed user's filter does
//! not admit, nor of a column the user's grants hide. A dataset's directory
//! is a link to its current generation (see [`generations`]), resolved once
//! per fetch:
//!
//! - a partition the filter admits *wholly* (its partition value satisfies a
//!   branch of the filter that says nothing else), with no column hidden, is
//!   preopened read-only as it is stored: the fast path;
//! - a partition the filter admits only in part (a branch also tests other
//!   columns), or any partition when a column is hidden, is served as a
//!   *view*: the host reads it, keeps the rows the filter admits and the
//!   columns the user may see (plus the filter's, which the host re-checks),
//!   writes that to an owner-only directory of this fetch, and preopens that
//!   instead, at the same guest path. The view is removed with the fetch;
//! - a partition the filter cannot admit is not there at all.
//!
//! Rows are still re-checked like any other.
#![deny(missing_docs)]
pub mod generations;
pub mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use silo_types::{Column, RowFilter};

use silo_bindings::silo::connector::files;
use silo_core::error::{Error, Result};
use upload::create_private_dir;

/// Where a dataset keeps its schema, beside its partitions.
pub const SCHEMA_DIR: &str = ".schema";
/// The partition directory of a dataset uploaded without a partition key.
pub const WHOLE: &str = "_all";

/// `[datasources.<name>.files]` in `silo.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Root of all uploads.
    pub data_dir: PathBuf,
    /// The organization whose uploads this datasource serves.
    #[serde(default = "default_org")]
    pub org: String,
}

fn default_org() -> String {
    "default".into()
}

/// An uploads directory: one organization's datasets.
#[derive(Debug, Clone)]
pub struct FilesStore {
    root: PathBuf,
    org: String,
}

/// What a dataset's schema directory says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Its columns.
    pub columns: Vec<Column>,
    /// The column whose values name the partitions, if any.
    pub partition_by: Option<String>,
}

impl FilesStore {
    /// The store a config names; nothing is created until an upload.
    pub fn new(config: &FilesConfig) -> Result<FilesStore> {
        if !upload::is_safe_name(&config.org) {
            return Err(Error::Config(format!(
                "files org `{}` is not a plain directory name",
                config.org
            )));
        }
        Ok(FilesStore {
            root: config.data_dir.clone(),
            org: config.org.clone(),
        })
    }

    /// The organization (the "schema" of its datasets).
    pub fn org(&self) -> &str {
        &self.org
    }

    /// `<data_dir>/<org>`.
    pub fn org_dir(&self) -> PathBuf {
        self.root.join(&self.org)
    }

    /// `<data_dir>/<org>/<dataset>` (the link to its current data), for a
    /// plain dataset name.
    pub fn dataset_dir(&self, dataset: &str) -> Result<PathBuf> {
        if !upload::is_safe_name(dataset) {
            return Err(Error::NotFound(format!("dataset `{dataset}`")));
        }
        Ok(self.org_dir().join(dataset))
    }

    /// The directory holding the dataset's current data: resolve it once
    /// and read everything of one fetch from it.
    pub fn current(&self, dataset: &str) -> Result<PathBuf> {
        self.dataset_dir(dataset)?;
        generations::current(&self.org_dir(), dataset)
    }

    /// The dataset's columns and partition key, from its schema directory.
    pub fn layout(&self, dataset: &str) -> Result<Layout> {
        Self::layout_in(&self.current(dataset)?, dataset)
    }

    fn layout_in(data: &Path, dataset: &str) -> Result<Layout> {
        let dir = data.join(SCHEMA_DIR);
        let text = std::fs::read_to_string(dir.join("columns.json"))
            .map_err(|_| Error::NotFound(format!("dataset `{dataset}` has no upload")))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("schema of `{dataset}`: {e}")))?;
        let columns = silo_types::text::schema_from_json(&json)
            .map_err(|e| Error::Internal(format!("schema of `{dataset}`: {e}")))?;
        let partition_by = std::fs::read_to_string(dir.join("partition_by"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Ok(Layout {
            columns,
            partition_by,
        })
    }

    /// What a fetch of `dataset` with `filter` and the `granted` columns
    /// (`None`: all) may read, as directories to preopen: each partition the
    /// filter can admit, as stored or as a view (see the module docs), and
    /// the dataset's schema (as a view too when a column is hidden).
    pub fn visible_partitions(
        &self,
        dataset: &str,
        filter: &RowFilter,
        granted: Option<&[String]>,
    ) -> Result<Preopens> {
        let dir = self.current(dataset)?;
        let layout = Self::layout_in(&dir, dataset)?;
        // The columns a view keeps: granted ones, and the filter's.
        let kept: Vec<&Column> = layout
            .columns
            .iter()
            .filter(|c| {
                granted.is_none_or(|g| g.contains(&c.name))
                    || filter.columns().contains(&c.name.as_str())
            })
            .collect();
        let hiding = kept.len() < layout.columns.len();
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::Internal(e.to_string()))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Only real directories with plain names; a planted symlink is skipped.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if name == SCHEMA_DIR || !is_dir || !upload::is_safe_name(&name) {
                continue;
            }
            names.push(name);
        }
        names.sort();
        let mut out = Preopens::default();
        for name in names {
            let guest = format!("/data/{name}");
            match exposure(filter, &layout, &name) {
                Exposure::None => {}
                Exposure::Whole if !hiding => out.dirs.push((dir.join(&name), guest)),
                Exposure::Whole | Exposure::Part => {
                    let view = out.view_dir()?.join(&name);
                    write_view(&dir.join(&name), &view, &layout.columns, &kept, filter)?;
                    out.dirs.push((view, guest));
                }
            }
        }
        // Its own schema too: the connector types cells by it.
        if hiding {
            let view = out.view_dir()?.join(SCHEMA_DIR);
            create_private_dir(&view)?;
            let columns: Vec<Column> = kept.into_iter().cloned().collect();
            std::fs::write(
                view.join("columns.json"),
                silo_types::text::schema_json(&columns).to_string(),
            )
            .map_err(|e| Error::Internal(format!("schema view: {e}")))?;
            out.dirs.push((view, format!("/schema/{dataset}")));
        } else {
            out.dirs
                .push((dir.join(SCHEMA_DIR), format!("/schema/{dataset}")));
        }
        Ok(out)
    }

    /// Schema directories of `datasets`, as (host directory, guest path).
    pub fn schema_dirs(&self, datasets: &[String]) -> Vec<(PathBuf, String)> {
        datasets
            .iter()
            .filter_map(|d| {
                let dir = self.current(d).ok()?.join(SCHEMA_DIR);
                dir.is_dir().then(|| (dir, format!("/schema/{d}")))
            })
            .collect()
    }
}

/// How much of a partition a filter admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exposure {
    /// No row: the partition is not shown.
    None,
    /// Every row: a branch of the filter holds for the partition's value and
    /// tests nothing else.
    Whole,
    /// Some rows, decided row by row.
    Part,
}

/// What `filter` admits of partition `name` of a dataset laid out as `layout`.
fn exposure(filter: &RowFilter, layout: &Layout, name: &str) -> Exposure {
    let any = match filter {
        RowFilter::AllRows => return Exposure::Whole,
        RowFilter::NoRows => return Exposure::None,
        RowFilter::AnyOf(any) => any,
    };
    let value = match &layout.partition_by {
        None => None,
        Some(column) => {
            let kind = layout
                .columns
                .iter()
                .find(|c| &c.name == column)
                .map_or(silo_types::ColumnType::Text, |c| c.kind);
            match silo_types::text::parse_cell(kind, name) {
                Ok(v) => Some((column, v)),
                Err(_) => return Exposure::None,
            }
        }
    };
    let mut seen = Exposure::None;
    for conjunction in any {
        let (on_column, others): (Vec<_>, Vec<_>) = conjunction
            .iter()
            .cloned()
            .partition(|p| value.as_ref().is_some_and(|(c, _)| &p.column == *c));
        let holds = match &value {
            None => true,
            Some((column, v)) => RowFilter::AnyOf(vec![on_column])
                .compile(&[column.as_str()])
                .is_ok_and(|f| f.matches(std::slice::from_ref(v))),
        };
        if holds && others.is_empty() {
            return Exposure::Whole;
        }
        if holds {
            seen = Exposure::Part;
        }
    }
    seen
}

/// Writes `<view>/data.csv`: the rows of `<partition>/data.csv` that `filter`
/// admits, with the `kept` columns only. Streams: memory is one record.
fn write_view(
    partition: &Path,
    view: &Path,
    columns: &[Column],
    kept: &[&Column],
    filter: &RowFilter,
) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("partition view: {e}"));
    create_private_dir(view)?;
    let mut reader = csv::Reader::from_path(partition.join("data.csv")).map_err(|e| failed(&e))?;
    let header = reader.headers().map_err(|e| failed(&e))?.clone();
    // Every column of the schema, by its position in this file.
    let positions: Vec<usize> = columns
        .iter()
        .map(|c| header.iter().position(|h| h == c.name))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Internal("partition header does not match its schema".into()))?;
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let check = filter.compile(&names).map_err(|e| failed(&e))?;
    // Only the filter's cells need typing; the rest are copied as text.
    let tested: Vec<bool> = names.iter().map(|n| filter.columns().contains(n)).collect();
    let keep: Vec<usize> = kept
        .iter()
        .filter_map(|k| columns.iter().position(|c| c.name == k.name))
        .collect();
    let file = std::fs::File::create(view.join("data.csv")).map_err(|e| failed(&e))?;
    let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(file));
    writer
        .write_record(keep.iter().map(|&i| names[i]))
        .map_err(|e| failed(&e))?;
    let mut record = csv::StringRecord::new();
    let mut cells = Vec::with_capacity(columns.len());
    while reader.read_record(&mut record).map_err(|e| failed(&e))? {
        cells.clear();
        for ((column, &at), &tested) in columns.iter().zip(&positions).zip(&tested) {
            cells.push(if tested {
                let text = record.get(at).unwrap_or_default();
                silo_types::text::parse_cell(column.kind, text).map_err(|e| failed(&e))?
            } else {
                silo_types::Value::Null
            });
        }
        if check.matches(&cells) {
            writer
                .write_record(
                    keep.iter()
                        .map(|&i| record.get(positions[i]).unwrap_or_default()),
                )
                .map_err(|e| failed(&e))?;
        }
    }
    writer.flush().map_err(|e| failed(&e))?;
    Ok(())
}

/// What a files grant preopens, and the views it owns.
#[derive(Debug, Clone, Default)]
pub struct Preopens {
    /// (host directory, guest path), each preopened read-only.
    pub dirs: Vec<(PathBuf, String)>,
    /// This fetch's views, removed when the last holder drops.
    views: Option<Arc<Views>>,
}

impl Preopens {
    /// Directories preopened as they are stored.
    pub fn stored(dirs: Vec<(PathBuf, String)>) -> Preopens {
        Preopens { dirs, views: None }
    }

    /// The guest paths, for `files.directories`.
    pub fn guest_paths(&self) -> Vec<String> {
        self.dirs.iter().map(|(_, g)| g.clone()).collect()
    }

    /// The (created on first use) owner-only directory of this fetch's views.
    fn view_dir(&mut self) -> Result<PathBuf> {
        if let Some(v) = &self.views {
            return Ok(v.0.clone());
        }
        let views = Views::create()?;
        let path = views.0.clone();
        self.views = Some(Arc::new(views));
        Ok(path)
    }
}

/// A fetch's partition views on disk.
#[derive(Debug)]
struct Views(PathBuf);

impl Views {
    fn create() -> Result<Views> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "silo-views-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        create_private_dir(&dir)?;
        Ok(Views(dir))
    }
}

impl Drop for Views {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), "could not remove a fetch's views: {e}");
        }
    }
}

impl silo_runtime::Grant for Preopens {
    fn preopened(&self) -> &[(PathBuf, String)] {
        &self.dirs
    }
}

silo_runtime::capability!(FilesCapability, Files, files, FilesHost);

impl files::Host for FilesHost<'_> {
    async fn directories(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .0
            .grant::<Preopens>()
            .map(Preopens::guest_paths)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_types::{ColumnType, Op, Predicate, Value};

    fn layout(partition_by: Option<&str>) -> Layout {
        let column = |name: &str| Column {
            name: name.into(),
            kind: ColumnType::Text,
            nullable: false,
        };
        Layout {
            columns: vec![column("tenant"), column("customer")],
            partition_by: partition_by.map(str::to_owned),
        }
    }

    fn pred(column: &str, op: Op, values: &[&str]) -> Predicate {
        Predicate {
            column: column.into(),
            op,
            values: values.iter().map(|v| Value::Text((*v).into())).collect(),
        }
    }

    #[test]
    fn a_partition_is_whole_only_when_a_branch_says_nothing_else() {
        let by_tenant = layout(Some("tenant"));
        // README's filter: the user's tenant, or customers shared with them.
        let readme = RowFilter::AnyOf(vec![
            vec![pred("tenant", Op::Eq, &["acme"])],
            vec![pred("customer", Op::In, &["c-4"])],
        ]);
        assert_eq!(exposure(&readme, &by_tenant, "acme"), Exposure::Whole);
        assert_eq!(exposure(&readme, &by_tenant, "globex"), Exposure::Part);
        let narrow = RowFilter::AnyOf(vec![vec![
            pred("tenant", Op::Eq, &["acme"]),
            pred("customer", Op::Eq, &["c-1"]),
        ]]);
        assert_eq!(exposure(&narrow, &by_tenant, "acme"), Exposure::Part);
        assert_eq!(exposure(&narrow, &by_tenant, "globex"), Exposure::None);
        assert_eq!(
            exposure(&RowFilter::NoRows, &by_tenant, "acme"),
            Exposure::None
        );
        assert_eq!(
            exposure(&RowFilter::AllRows, &by_tenant, "acme"),
            Exposure::Whole
        );
        // Without partitions, only a branch with no condition admits all.
        let whole = layout(None);
        assert_eq!(exposure(&readme, &whole, WHOLE), Exposure::Part);
        assert_eq!(
            exposure(&RowFilter::AnyOf(vec![vec![]]), &whole, WHOLE),
            Exposure::Whole
        );
        assert_eq!(
            exposure(&RowFilter::AnyOf(vec![]), &whole, WHOLE),
            Exposure::None
        );
    }

    #[test]
    fn views_are_owner_only_and_removed_with_the_fetch() {
        use std::os::unix::fs::PermissionsExt;
        let mut preopens = Preopens::default();
        let dir = preopens.view_dir().unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let copy = preopens.clone();
        drop(preopens);
        assert!(dir.exists(), "a holder is left");
        drop(copy);
        assert!(!dir.exists());
    }
}
