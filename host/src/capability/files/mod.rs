//! The files capability: uploaded datasets on local disk, segregated by
//! directory (`<data_dir>/<org>/<dataset>/<partition>/`). A connector reads
//! them through WASI, and the host preopens, read-only, only the partitions
//! the embed user's filter can admit: isolation is physical first, and the
//! rows are still re-checked like any other.
pub mod upload;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use silo_types::{Column, RowFilter};

use crate::error::{Error, Result};
use crate::runtime::State;
use crate::runtime::bindings::silo::connector::files;

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

    /// `<data_dir>/<org>/<dataset>`, for a plain dataset name.
    pub fn dataset_dir(&self, dataset: &str) -> Result<PathBuf> {
        if !upload::is_safe_name(dataset) {
            return Err(Error::NotFound(format!("dataset `{dataset}`")));
        }
        Ok(self.org_dir().join(dataset))
    }

    /// The dataset's columns and partition key, from its schema directory.
    pub fn layout(&self, dataset: &str) -> Result<Layout> {
        let dir = self.dataset_dir(dataset)?.join(SCHEMA_DIR);
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

    /// The partitions of `dataset` that `filter` can admit rows from, as
    /// (host directory, guest path) pairs to preopen.
    pub fn visible_partitions(
        &self,
        dataset: &str,
        filter: &RowFilter,
    ) -> Result<Vec<(PathBuf, String)>> {
        let layout = self.layout(dataset)?;
        let dir = self.dataset_dir(dataset)?;
        let mut out = Vec::new();
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
            if admits(filter, &layout, &name) {
                out.push((dir.join(&name), format!("/data/{name}")));
            }
        }
        out.sort();
        // Its own schema too: the connector types cells by it.
        out.extend(self.schema_dirs(&[dataset.to_owned()]));
        Ok(out)
    }

    /// Schema directories of `datasets`, as (host directory, guest path).
    pub fn schema_dirs(&self, datasets: &[String]) -> Vec<(PathBuf, String)> {
        datasets
            .iter()
            .filter_map(|d| {
                let dir = self.dataset_dir(d).ok()?.join(SCHEMA_DIR);
                dir.is_dir().then(|| (dir, format!("/schema/{d}")))
            })
            .collect()
    }
}

/// Whether partition `name` may hold rows `filter` admits: some conjunction
/// whose predicates on the partition column all hold for the partition's
/// value (predicates on other columns are decided row by row later).
fn admits(filter: &RowFilter, layout: &Layout, name: &str) -> bool {
    let Some(column) = &layout.partition_by else {
        return match filter {
            RowFilter::AllRows => true,
            RowFilter::NoRows => false,
            RowFilter::AnyOf(any) => !any.is_empty(),
        };
    };
    let any = match filter {
        RowFilter::AllRows => return true,
        RowFilter::NoRows => return false,
        RowFilter::AnyOf(any) => any,
    };
    let kind = layout
        .columns
        .iter()
        .find(|c| &c.name == column)
        .map_or(silo_types::ColumnType::Text, |c| c.kind);
    let Ok(value) = silo_types::text::parse_cell(kind, name) else {
        return false;
    };
    any.iter().any(|conjunction| {
        let on_column: Vec<_> = conjunction
            .iter()
            .filter(|p| &p.column == column)
            .cloned()
            .collect();
        RowFilter::AnyOf(vec![on_column])
            .compile(&[column.as_str()])
            .is_ok_and(|f| f.matches(std::slice::from_ref(&value)))
    })
}

/// What a files grant preopens.
#[derive(Debug, Clone, Default)]
pub struct Preopens(pub Vec<(PathBuf, String)>);

impl Preopens {
    /// The guest paths, for `files.directories`.
    pub fn guest_paths(&self) -> Vec<String> {
        self.0.iter().map(|(_, g)| g.clone()).collect()
    }
}

impl files::Host for State {
    async fn directories(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.preopens.guest_paths())
    }
}
