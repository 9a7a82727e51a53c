//! Silo's configurable JSON-API connector.
//!
//! Everything it knows about the API comes from the datasource's `settings`
//! (`http.settings()`), never from the network while describing:
//!
//! ```json
//! { "datasets": { "orders": {
//!     "path": "/api/{region}/orders",
//!     "params": { "tenant": "tenant" },
//!     "static_params": { "format": "json" },
//!     "rows": "/data",
//!     "next": { "param": "cursor", "from": "/next" },
//!     "columns": [
//!       { "name": "id", "type": "int", "from": "/id", "nullable": false },
//!       { "name": "tenant", "type": "text" },
//!       { "name": "amount", "type": "decimal", "from": "/amount/value" } ] } } }
//! ```
//!
//! For an API that numbers its pages instead, give
//! `"page": { "param": "page", "first": 1 }` in place of `next`.
//!
//! A fetch asks the API once per combination of the values the embed user's
//! filter pins for the path's `{column}` placeholders and the `params`
//! columns (a parameter whose column the filter leaves free is left out),
//! follows `next` cursors (or asks for `page` numbers from `first` until a
//! page comes back empty), takes the array at the JSON pointer `rows`, and
//! types each field the pointer `from` (default `/<name>`) selects. It
//! applies the filter, projection and limit itself; the host binds the
//! parameters it requires and re-checks every row anyway.
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use serde_json::Value as Json;
use silo_sdk::{
    Batches, Column, Connector, Dataset, Error, FetchOutput, FetchRequest, Producer, Row, http,
};
use silo_types::http::{Bound, param_text};
use silo_types::{ColumnType, CompiledFilter, RowFilter, Value};

struct HttpJson;

/// Rows per batch handed to the host.
const BATCH: usize = 1024;
/// Most requests one fetch plans before following cursors: beyond this the
/// filter pins too many values for one request each.
const MAX_PLANNED: usize = 64;

/// One dataset's mapping, from the settings.
struct Mapping {
    path: String,
    params: BTreeMap<String, String>,
    static_params: Vec<(String, String)>,
    rows: String,
    next: Option<(String, String)>,
    page: Option<(String, u64)>,
    columns: Vec<(Column, String)>,
}

fn settings() -> Result<BTreeMap<String, Mapping>, Error> {
    let bad = |m: String| Error::Connector(format!("http-json settings: {m}"));
    let json: Json = serde_json::from_str(&http::settings()).map_err(|e| bad(e.to_string()))?;
    let Some(datasets) = json.get("datasets").and_then(Json::as_object) else {
        return Err(bad("`datasets` is missing".into()));
    };
    let text = |v: &Json, key: &str| v.get(key).and_then(Json::as_str).map(str::to_owned);
    let pairs = |v: &Json, key: &str| -> Vec<(String, String)> {
        v.get(key)
            .and_then(Json::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    datasets
        .iter()
        .map(|(name, d)| {
            let path = text(d, "path").ok_or_else(|| bad(format!("`{name}` has no path")))?;
            let columns = d
                .get("columns")
                .and_then(Json::as_array)
                .ok_or_else(|| bad(format!("`{name}` has no columns")))?
                .iter()
                .map(|c| {
                    let column = text(c, "name")
                        .ok_or_else(|| bad(format!("a column of `{name}` has no name")))?;
                    let kind =
                        silo_types::text::kind_named(text(c, "type").as_deref().unwrap_or("text"))
                            .ok_or_else(|| {
                                bad(format!(
                                    "`{name}.{column}` has an unknown type; the types are \
                                     boolean, int, float, decimal, text, bytes, date, timestamp, json"
                                ))
                            })?;
                    let from = text(c, "from").unwrap_or_else(|| format!("/{column}"));
                    let nullable = c.get("nullable").and_then(Json::as_bool).unwrap_or(true);
                    Ok((
                        Column {
                            name: column,
                            kind: kind.into(),
                            nullable,
                        },
                        from,
                    ))
                })
                .collect::<Result<_, Error>>()?;
            let next = d
                .get("next")
                .and_then(|n| Some((text(n, "param")?, text(n, "from")?)));
            let page = d.get("page").and_then(|p| {
                let first = p.get("first").and_then(Json::as_u64).unwrap_or(1);
                Some((text(p, "param")?, first))
            });
            if next.is_some() && page.is_some() {
                return Err(bad(format!("`{name}` has both `next` and `page`: pick one")));
            }
            Ok((
                name.clone(),
                Mapping {
                    path,
                    params: pairs(d, "params").into_iter().collect(),
                    static_params: pairs(d, "static_params"),
                    rows: text(d, "rows").unwrap_or_default(),
                    next,
                    page,
                    columns,
                },
            ))
        })
        .collect()
}

impl Connector for HttpJson {
    type Batches = Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(settings()?
            .into_iter()
            .map(|(name, m)| Dataset {
                name,
                columns: m.columns.into_iter().map(|(c, _)| c).collect(),
            })
            .collect())
    }

    fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
        let mut all = settings()?;
        let mapping = all
            .remove(&request.dataset)
            .ok_or_else(|| Error::NotFound(format!("dataset `{}`", request.dataset)))?;
        let plan = request
            .columns
            .iter()
            .map(|wanted| {
                mapping
                    .columns
                    .iter()
                    .find(|(c, _)| &c.name == wanted)
                    .map(|(c, from)| (from.clone(), ColumnType::from(c.kind)))
                    .ok_or_else(|| Error::NotFound(format!("column `{wanted}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = RowFilter::from(request.filter.clone());
        let mut requests = plan_requests(&mapping, &filter)?;
        if let Some((param, first)) = &mapping.page {
            for (_, query) in requests.iter_mut() {
                query.push((param.clone(), first.to_string()));
            }
        }
        let compiled = filter
            .compile(&request.columns)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let reader = RefCell::new(Reader {
            requests,
            page: VecDeque::new(),
            rows_at: mapping.rows,
            next: mapping.next,
            page_param: mapping.page.map(|(param, _)| param),
            plan,
            filter: compiled,
            left: request.limit.unwrap_or(u64::MAX),
        });
        Ok(FetchOutput::Produced(Batches::new(Producer::new(
            move || reader.borrow_mut().next_batch(),
        ))))
    }
}

/// A request still to make: path and query.
type Request = (String, Vec<(String, String)>);

/// One request per combination of the pinned values of the path's
/// placeholders and the parameters' columns.
fn plan_requests(m: &Mapping, filter: &RowFilter) -> Result<VecDeque<Request>, Error> {
    // (placeholder or parameter, column, is a placeholder)
    let mut slots: Vec<(String, String, bool)> = m
        .params
        .iter()
        .map(|(p, c)| (p.clone(), c.clone(), false))
        .collect();
    let mut rest = m.path.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let column = &rest[open + 1..open + close];
        slots.push((column.to_owned(), column.to_owned(), true));
        rest = &rest[open + close + 1..];
    }
    let mut combos: Vec<Request> = vec![(m.path.clone(), m.static_params.clone())];
    for (slot, column, in_path) in slots {
        let values: Vec<String> = match filter.bound_values(&column) {
            Bound::Values(v) => v.iter().filter_map(param_text).collect(),
            Bound::Any | Bound::Unbound if !in_path => continue,
            _ => {
                return Err(Error::InvalidRequest(format!(
                    "the path {} needs `{column}` pinned by the row filter",
                    m.path
                )));
            }
        };
        let mut grown = Vec::with_capacity(combos.len() * values.len());
        for (path, query) in &combos {
            for v in &values {
                grown.push(if in_path {
                    (
                        path.replace(&format!("{{{slot}}}"), &encode_segment(v)),
                        query.clone(),
                    )
                } else {
                    let mut q = query.clone();
                    q.push((slot.clone(), v.clone()));
                    (path.clone(), q)
                });
            }
        }
        combos = grown;
        if combos.len() > MAX_PLANNED {
            return Err(Error::LimitExceeded(format!(
                "the row filter pins more than {MAX_PLANNED} combinations of values; this API takes one per request"
            )));
        }
    }
    Ok(combos.into())
}

/// `v` as one path segment: unreserved characters as they are, the rest
/// percent-encoded (a `/` or `.` in a value can never make a new segment).
fn encode_segment(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Streams pages, request after request.
struct Reader {
    requests: VecDeque<Request>,
    page: VecDeque<Json>,
    rows_at: String,
    next: Option<(String, String)>,
    /// The page-number parameter: the next request asks for one more.
    page_param: Option<String>,
    plan: Vec<(String, ColumnType)>,
    filter: CompiledFilter,
    left: u64,
}

impl Reader {
    fn next_batch(&mut self) -> Result<Option<Vec<Row>>, Error> {
        let mut batch = Vec::new();
        while batch.len() < BATCH && self.left > 0 {
            let Some(item) = self.page.pop_front() else {
                let Some(request) = self.requests.pop_front() else {
                    break;
                };
                self.load(request)?;
                continue;
            };
            let row = self
                .plan
                .iter()
                .map(|(from, kind)| cell(item.pointer(from), *kind))
                .collect::<Result<Vec<_>, _>>()?;
            if self.filter.matches(&row) {
                batch.push(row.into_iter().map(Into::into).collect());
                self.left -= 1;
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    /// Makes one request and queues its rows and, if any, its next page.
    fn load(&mut self, (path, query): Request) -> Result<(), Error> {
        let response = http::get(&path, &query)?;
        if !(200..300).contains(&response.status) {
            return Err(Error::Datasource(format!(
                "GET {path} answered {}",
                response.status
            )));
        }
        let body: Json = serde_json::from_slice(&response.body)
            .map_err(|e| Error::Datasource(format!("GET {path}: the body is not JSON ({e})")))?;
        let rows = body
            .pointer(&self.rows_at)
            .and_then(Json::as_array)
            .ok_or_else(|| {
                Error::Datasource(format!(
                    "GET {path}: no array at `{}` in the answer",
                    self.rows_at
                ))
            })?;
        self.page.extend(rows.iter().cloned());
        if let Some((param, from)) = &self.next
            && let Some(cursor) = body.pointer(from).filter(|c| !c.is_null())
        {
            let mut next = query;
            next.retain(|(k, _)| k != param);
            next.push((param.clone(), silo_types::text::json_cell(cursor)));
            self.requests.push_front((path, next));
        } else if let Some(param) = &self.page_param
            && !rows.is_empty()
        {
            // Page numbers: the next one, until a page comes back empty.
            let mut next = query;
            let current = next
                .iter()
                .find(|(k, _)| k == param)
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0);
            next.retain(|(k, _)| k != param);
            next.push((param.clone(), (current + 1).to_string()));
            self.requests.push_front((path, next));
        }
        Ok(())
    }
}

/// A JSON field as a cell of `kind`: text as it is, anything else through
/// its text form, so numbers given as strings and dates as text both work.
fn cell(field: Option<&Json>, kind: ColumnType) -> Result<Value, Error> {
    Ok(match (field, kind) {
        (None | Some(Json::Null), _) => Value::Null,
        (Some(v), ColumnType::Json) => Value::Json(v.to_string()),
        (Some(Json::String(s)), ColumnType::Text) => Value::Text(s.clone()),
        (Some(v), kind) => silo_types::text::parse_cell(kind, &silo_types::text::json_cell(v))
            .map_err(Error::Datasource)?,
    })
}

silo_sdk::export_connector!(HttpJson);
