//! Silo's connector for uploaded files.
//!
//! The host preopens, read-only, `/schema/<dataset>` for each dataset it may
//! describe and, for a fetch, `/data/<partition>` for each partition the embed
//! user's filter can admit. `describe` reads the schemas; `fetch` reads
//! `data.csv` of each preopened partition, types each cell by the schema,
//! applies the filter and the projection, and streams batches. The host
//! re-checks every row, so this code is a convenience, not the boundary.
use std::collections::VecDeque;
use std::fs::File;

use silo_sdk::{
    Batches, Connector, Dataset, Error, FetchOutput, FetchRequest, Producer, Row, files,
};
use silo_types::{ColumnType, CompiledFilter};

struct Files;

/// Rows per batch handed to the host.
const BATCH: usize = 1024;

fn schema(dir: &str) -> Result<Vec<silo_types::Column>, Error> {
    let path = format!("{dir}/columns.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::Connector(format!("{path}: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Connector(format!("{path}: {e}")))?;
    silo_types::text::schema_from_json(&json).map_err(Error::Connector)
}

impl Connector for Files {
    type Batches = Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        files::directories()
            .iter()
            .filter_map(|d| Some((d, d.strip_prefix("/schema/")?)))
            .map(|(dir, name)| {
                Ok(Dataset {
                    name: name.to_owned(),
                    columns: schema(dir)?.into_iter().map(Into::into).collect(),
                })
            })
            .collect()
    }

    fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
        let dirs = files::directories();
        let schema_dir = format!("/schema/{}", request.dataset);
        if !dirs.contains(&schema_dir) {
            return Err(Error::NotFound(format!("dataset `{}`", request.dataset)));
        }
        let columns = schema(&schema_dir)?;
        let partitions: VecDeque<String> = dirs
            .into_iter()
            .filter(|d| d.starts_with("/data/"))
            .map(|d| format!("{d}/data.csv"))
            .collect();
        let filter = silo_types::RowFilter::from(request.filter.clone())
            .compile(&request.columns)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let reader = Reader {
            partitions,
            current: None,
            columns,
            wanted: request.columns,
            filter,
            left: request.limit.unwrap_or(u64::MAX),
        };
        let reader = std::cell::RefCell::new(reader);
        Ok(FetchOutput::Produced(Batches::new(Producer::new(
            move || reader.borrow_mut().next_batch(),
        ))))
    }
}

/// An open partition file and, per requested column, its position and type.
type Open = (csv::Reader<File>, Vec<(usize, ColumnType)>);

/// Streams the partitions one after another.
struct Reader {
    partitions: VecDeque<String>,
    current: Option<Open>,
    columns: Vec<silo_types::Column>,
    wanted: Vec<String>,
    filter: CompiledFilter,
    left: u64,
}

impl Reader {
    fn open(&self, path: &str) -> Result<Open, Error> {
        let file = File::open(path).map_err(|e| Error::Connector(format!("{path}: {e}")))?;
        let mut reader = csv::Reader::from_reader(file);
        let header = reader
            .headers()
            .map_err(|e| Error::Connector(format!("{path}: {e}")))?
            .clone();
        let plan = self
            .wanted
            .iter()
            .map(|w| {
                let i = header
                    .iter()
                    .position(|h| h == w)
                    .ok_or_else(|| Error::NotFound(format!("column `{w}`")))?;
                let kind = self
                    .columns
                    .iter()
                    .find(|c| &c.name == w)
                    .map_or(ColumnType::Text, |c| c.kind);
                Ok((i, kind))
            })
            .collect::<Result<_, Error>>()?;
        Ok((reader, plan))
    }

    fn next_batch(&mut self) -> Result<Option<Vec<Row>>, Error> {
        let mut batch = Vec::new();
        while batch.len() < BATCH && self.left > 0 {
            if self.current.is_none() {
                let Some(path) = self.partitions.pop_front() else {
                    break;
                };
                self.current = Some(self.open(&path)?);
            }
            let Some((reader, plan)) = self.current.as_mut() else {
                break;
            };
            let mut record = csv::StringRecord::new();
            let more = reader
                .read_record(&mut record)
                .map_err(|e| Error::Connector(e.to_string()))?;
            if !more {
                self.current = None;
                continue;
            }
            let row = plan
                .iter()
                .map(|(i, kind)| {
                    silo_types::text::parse_cell(*kind, record.get(*i).unwrap_or_default())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(Error::Connector)?;
            if self.filter.matches(&row) {
                batch.push(row.into_iter().map(Into::into).collect());
                self.left -= 1;
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

silo_sdk::export_connector!(Files);
