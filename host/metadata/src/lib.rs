//! Metadata for LLM summarization: a single-pass, bounded-memory profile of
//! the verified rows of a fetch, and the privacy policy that decides what of
//! it may leave the host.
//!
//! The [`Profiler`] keeps sketches, never rows. [`Profile::payload`] then
//! applies the policy: a column is `hidden` (left out), `shape` (type, nulls,
//! distinct estimate, text lengths), `stats` (shape plus rounded numeric and
//! date statistics) or `categories` (stats plus the values seen at least
//! `k` times). Statistics over fewer than `k` values are left out, and
//! extremes, quantiles and means are rounded to two significant digits and
//! dates to the month unless the column allows exact extremes. Nothing else
//! copies a cell into the payload.
//!
//! It sees rows only as batches handed to it; running the fetch that
//! produces them belongs to the layer above.
#![deny(missing_docs)]
pub mod llm;
pub mod sketch;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use silo_types::{ColumnType, RowFilter, Value, time};
use utoipa::ToSchema;

use sketch::{Frequent, Hll, Quantiles, hash_bytes, mix64};

/// The payload's schema name and version.
pub const PAYLOAD_SCHEMA: &str = "silo.metadata.v1";
/// The JSON Schema of the payload.
pub const PAYLOAD_JSON_SCHEMA: &str = include_str!("metadata.v1.schema.json");
/// Default `k`: a category value, or any statistic, needs this many rows.
pub const DEFAULT_K: u64 = 10;
/// Candidate category values tracked per column.
const CATEGORY_CANDIDATES: usize = 256;
/// Most category values in a payload per column.
const MAX_CATEGORIES: usize = 20;

/// What of a column may reach the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    /// Nothing: the column is left out.
    Hidden,
    /// Type, nulls, distinct estimate, text lengths.
    Shape,
    /// Shape, plus rounded numeric and date statistics.
    Stats,
    /// Stats, plus values that appear at least `k` times.
    Categories,
}

/// A dataset's privacy policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivacyPolicy {
    /// Per column; a column not named gets `shape` if it holds text and
    /// `stats` otherwise.
    #[serde(default)]
    pub columns: BTreeMap<String, Privacy>,
    /// Minimum occurrences for a category, and minimum values for any
    /// statistic.
    #[serde(default = "default_k")]
    pub k: u64,
    /// Columns whose extremes may be exact (not rounded or bucketed).
    #[serde(default)]
    pub exact_extremes: BTreeSet<String>,
}

fn default_k() -> u64 {
    DEFAULT_K
}

impl Default for PrivacyPolicy {
    fn default() -> Self {
        PrivacyPolicy {
            columns: BTreeMap::new(),
            k: DEFAULT_K,
            exact_extremes: BTreeSet::new(),
        }
    }
}

impl PrivacyPolicy {
    /// The level of `column` of type `kind`.
    pub fn level(&self, column: &str, kind: ColumnType) -> Privacy {
        self.columns.get(column).copied().unwrap_or(match kind {
            ColumnType::Text | ColumnType::Json | ColumnType::Bytes => Privacy::Shape,
            _ => Privacy::Stats,
        })
    }

    /// A fingerprint for cache keys: a changed policy is a cache miss.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            serde_json::to_vec(self).unwrap_or_default(),
        ))
    }
}

/// Running statistics of one column.
struct ColumnStats {
    name: String,
    kind: ColumnType,
    count: u64,
    nulls: u64,
    distinct: Hll,
    // Numbers (Welford) and their quantiles.
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    quantiles: Quantiles,
    // Text and bytes lengths, in characters and bytes.
    len_min: u64,
    len_max: u64,
    len_sum: u64,
    // Dates (days) and timestamps (microseconds).
    t_min: i64,
    t_max: i64,
    trues: u64,
    frequent: Option<Frequent>,
}

impl ColumnStats {
    fn new(name: String, kind: ColumnType, categories: bool) -> ColumnStats {
        ColumnStats {
            name,
            kind,
            count: 0,
            nulls: 0,
            distinct: Hll::default(),
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            quantiles: Quantiles::default(),
            len_min: u64::MAX,
            len_max: 0,
            len_sum: 0,
            t_min: i64::MAX,
            t_max: i64::MIN,
            trues: 0,
            frequent: categories.then(|| Frequent::new(CATEGORY_CANDIDATES)),
        }
    }

    fn number(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.quantiles.add(x);
    }

    fn length(&mut self, len: u64) {
        self.len_min = self.len_min.min(len);
        self.len_max = self.len_max.max(len);
        self.len_sum += len;
    }

    fn instant(&mut self, t: i64) {
        self.t_min = self.t_min.min(t);
        self.t_max = self.t_max.max(t);
    }

    fn add(&mut self, v: &Value) {
        self.count += 1;
        match v {
            Value::Null => self.nulls += 1,
            Value::Boolean(b) => {
                self.trues += u64::from(*b);
                self.distinct.add(mix64(u64::from(*b)));
            }
            Value::Int(i) => {
                self.distinct.add(mix64(*i as u64));
                self.number(*i as f64);
            }
            Value::Float(f) => {
                self.distinct.add(mix64(f.to_bits()));
                self.number(*f);
            }
            Value::Decimal(s) => {
                self.distinct.add(hash_bytes(1, s.as_bytes()));
                if let Ok(x) = s.parse::<f64>() {
                    self.number(x);
                }
            }
            Value::Text(s) | Value::Json(s) => {
                self.distinct.add(hash_bytes(2, s.as_bytes()));
                // Characters, not bytes; ASCII (the common case) is its length.
                let chars = if s.is_ascii() {
                    s.len()
                } else {
                    s.chars().count()
                };
                self.length(chars as u64);
                if let Some(f) = &mut self.frequent {
                    f.add(s);
                }
            }
            Value::Bytes(b) => {
                self.distinct.add(hash_bytes(3, b));
                self.length(b.len() as u64);
            }
            Value::Date(d) => {
                self.distinct.add(mix64(*d as u64));
                self.instant(i64::from(*d));
            }
            Value::Timestamp(t) => {
                self.distinct.add(mix64(*t as u64));
                self.instant(*t);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.distinct.heap_bytes()
            + self.quantiles.heap_bytes()
            + self.frequent.as_ref().map_or(0, Frequent::heap_bytes)
    }
}

/// Profiles a stream of rows in one pass, in memory bounded by the number of
/// columns, whatever the number of rows.
pub struct Profiler {
    columns: Vec<ColumnStats>,
    rows: u64,
}

impl Profiler {
    /// A profiler for `columns` (name and type); only columns whose policy
    /// is `categories` track values.
    pub fn new(columns: &[(String, ColumnType)], policy: &PrivacyPolicy) -> Profiler {
        Profiler {
            columns: columns
                .iter()
                .map(|(name, kind)| {
                    let level = policy.level(name, *kind);
                    ColumnStats::new(name.clone(), *kind, level == Privacy::Categories)
                })
                .collect(),
            rows: 0,
        }
    }

    /// Adds a batch of rows (each in column order).
    pub fn add<'a>(&mut self, rows: impl IntoIterator<Item = &'a [Value]>) {
        for row in rows {
            self.rows += 1;
            for (c, v) in self.columns.iter_mut().zip(row) {
                c.add(v);
            }
        }
    }

    /// Heap bytes the sketches hold: flat in the number of rows.
    pub fn heap_bytes(&self) -> usize {
        self.columns.iter().map(ColumnStats::heap_bytes).sum()
    }

    /// The finished profile.
    pub fn finish(self, dataset: &str, filter: &RowFilter) -> Profile {
        Profile {
            dataset: dataset.to_owned(),
            rows: self.rows,
            filter: FilterShape::of(filter),
            columns: self.columns,
        }
    }
}

/// A finished profile: sketches and counts, not yet through the policy.
pub struct Profile {
    dataset: String,
    rows: u64,
    filter: FilterShape,
    columns: Vec<ColumnStats>,
}

/// The applied filter's shape: which columns and operators, never values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FilterShape {
    /// `all_rows`, `no_rows` or `any_of`.
    pub kind: String,
    /// For `any_of`: each conjunction as `column op` terms.
    pub conjunctions: Vec<Vec<String>>,
}

impl FilterShape {
    fn of(filter: &RowFilter) -> FilterShape {
        match filter {
            RowFilter::AllRows => FilterShape {
                kind: "all_rows".into(),
                conjunctions: Vec::new(),
            },
            RowFilter::NoRows => FilterShape {
                kind: "no_rows".into(),
                conjunctions: Vec::new(),
            },
            RowFilter::AnyOf(any) => {
                let mut conjunctions: Vec<Vec<String>> = any
                    .iter()
                    .map(|c| {
                        let mut terms: Vec<String> = c
                            .iter()
                            .map(|p| format!("{} {}", p.column, p.op.symbol()))
                            .collect();
                        terms.sort();
                        terms.dedup();
                        terms
                    })
                    .collect();
                conjunctions.sort();
                conjunctions.dedup();
                FilterShape {
                    kind: "any_of".into(),
                    conjunctions,
                }
            }
        }
    }
}

/// `silo.metadata.v1`: what may be sent to an LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Always [`PAYLOAD_SCHEMA`].
    pub schema: String,
    /// The dataset's name.
    pub dataset: String,
    /// Rows the filter admitted.
    pub rows: u64,
    /// The applied filter's shape.
    pub filter: FilterShape,
    /// The columns the policy lets out.
    pub columns: Vec<ColumnMeta>,
    /// How many columns the policy hides.
    pub hidden_columns: u64,
    /// The `k` in force.
    pub k: u64,
}

/// One column of the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnMeta {
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The policy applied.
    pub privacy: Privacy,
    /// Values (including nulls).
    pub count: u64,
    /// Nulls.
    pub nulls: u64,
    /// Distinct values, estimated (HyperLogLog, about 1.6% error).
    pub distinct_estimate: u64,
    /// Text or byte lengths.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub length: Option<LengthMeta>,
    /// Numeric statistics (`stats` and up).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub numeric: Option<NumericMeta>,
    /// Date or timestamp range (`stats` and up).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub range: Option<RangeMeta>,
    /// Share of `true` among non-null booleans (`stats` and up).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub true_fraction: Option<f64>,
    /// Values seen at least `k` times (`categories`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub categories: Option<Vec<Category>>,
}

/// Length statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LengthMeta {
    /// Shortest.
    pub min: u64,
    /// Longest.
    pub max: u64,
    /// Mean, one decimal.
    pub mean: f64,
}

/// Numeric statistics, rounded unless exact extremes are allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumericMeta {
    /// Smallest (rounded down).
    pub min: f64,
    /// Largest (rounded up).
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Quantiles p05, p25, p50, p75, p95 (sketch, 1% relative error).
    pub quantiles: BTreeMap<String, f64>,
}

/// A date or timestamp range: months unless exact extremes are allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeMeta {
    /// Earliest.
    pub min: String,
    /// Latest.
    pub max: String,
}

/// A frequent value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// The value.
    pub value: String,
    /// At least this many rows hold it.
    pub count: u64,
}

/// Rounds to two significant digits, toward `-inf` (`down`) or `+inf`.
fn round2(x: f64, dir: Rounding) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(1 - x.abs().log10().floor() as i32);
    let y = x * scale;
    let r = match dir {
        Rounding::Down => y.floor(),
        Rounding::Up => y.ceil(),
        Rounding::Nearest => y.round(),
    };
    r / scale
}

#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
    Nearest,
}

fn month(days: i64) -> String {
    let d = time::format_date(i32::try_from(days).unwrap_or(0));
    d.get(..7).unwrap_or(&d).to_owned()
}

impl Profile {
    /// Rows profiled.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The payload `policy` lets out.
    pub fn payload(&self, policy: &PrivacyPolicy) -> Payload {
        let k = policy.k.max(1);
        let mut columns = Vec::new();
        let mut hidden = 0;
        for c in &self.columns {
            let level = policy.level(&c.name, c.kind);
            if level == Privacy::Hidden {
                hidden += 1;
                continue;
            }
            let stats = level != Privacy::Shape;
            let exact = policy.exact_extremes.contains(&c.name);
            let values = c.count - c.nulls;
            let enough = values >= k;
            let length = (c.len_max > 0 || c.len_min != u64::MAX).then(|| LengthMeta {
                min: if c.len_min == u64::MAX { 0 } else { c.len_min },
                max: c.len_max,
                mean: if values > 0 {
                    (c.len_sum as f64 / values as f64 * 10.0).round() / 10.0
                } else {
                    0.0
                },
            });
            let numeric = (stats && enough && c.n >= k).then(|| {
                let r = |x: f64| {
                    if exact {
                        x
                    } else {
                        round2(x, Rounding::Nearest)
                    }
                };
                let quantiles = [
                    ("p05", 0.05),
                    ("p25", 0.25),
                    ("p50", 0.5),
                    ("p75", 0.75),
                    ("p95", 0.95),
                ]
                .into_iter()
                .filter_map(|(name, q)| Some((name.to_owned(), r(c.quantiles.quantile(q)?))))
                .collect();
                NumericMeta {
                    min: if exact {
                        c.min
                    } else {
                        round2(c.min, Rounding::Down)
                    },
                    max: if exact {
                        c.max
                    } else {
                        round2(c.max, Rounding::Up)
                    },
                    mean: r(c.mean),
                    stddev: r((c.m2 / c.n as f64).sqrt()),
                    quantiles,
                }
            });
            let range = (stats && enough && c.t_min <= c.t_max).then(|| match c.kind {
                ColumnType::Date if exact => RangeMeta {
                    min: time::format_date(i32::try_from(c.t_min).unwrap_or(0)),
                    max: time::format_date(i32::try_from(c.t_max).unwrap_or(0)),
                },
                ColumnType::Date => RangeMeta {
                    min: month(c.t_min),
                    max: month(c.t_max),
                },
                _ if exact => RangeMeta {
                    min: time::format_timestamp(c.t_min),
                    max: time::format_timestamp(c.t_max),
                },
                _ => RangeMeta {
                    min: month(c.t_min.div_euclid(86_400_000_000)),
                    max: month(c.t_max.div_euclid(86_400_000_000)),
                },
            });
            let true_fraction = (stats && enough && c.kind == ColumnType::Boolean)
                .then(|| ((c.trues as f64 / values as f64) * 100.0).round() / 100.0);
            let categories = (level == Privacy::Categories).then(|| {
                c.frequent
                    .as_ref()
                    .map(|f| {
                        f.at_least(k)
                            .into_iter()
                            .take(MAX_CATEGORIES)
                            .map(|(v, n)| Category {
                                value: v.to_owned(),
                                count: n,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            });
            columns.push(ColumnMeta {
                name: c.name.clone(),
                kind: silo_types::text::kind_name(c.kind).to_owned(),
                privacy: level,
                count: c.count,
                nulls: c.nulls,
                distinct_estimate: c.distinct.estimate().min(values),
                length,
                numeric,
                range,
                true_fraction,
                categories,
            });
        }
        Payload {
            schema: PAYLOAD_SCHEMA.into(),
            dataset: self.dataset.clone(),
            rows: self.rows,
            filter: self.filter.clone(),
            columns,
            hidden_columns: hidden,
            k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<(String, ColumnType)> {
        [
            ("name", ColumnType::Text),
            ("city", ColumnType::Text),
            ("amount", ColumnType::Decimal),
            ("day", ColumnType::Date),
            ("vip", ColumnType::Boolean),
            ("ssn", ColumnType::Text),
        ]
        .into_iter()
        .map(|(n, k)| (n.to_owned(), k))
        .collect()
    }

    /// 1000 ordinary rows plus canaries: a unique name, a city seen `k - 1`
    /// times, a unique amount and a unique date.
    fn profile(policy: &PrivacyPolicy, city_canaries: usize) -> Payload {
        let mut p = Profiler::new(&columns(), policy);
        let mut rows = Vec::new();
        for i in 0..1000i64 {
            rows.push(vec![
                Value::Text(format!("person-{i}")),
                Value::Text(["Paris", "Lyon", "Nice"][(i % 3) as usize].into()),
                Value::Decimal(format!("{}.25", 10 + i % 50)),
                Value::Date(20_454 + (i % 60) as i32),
                Value::Boolean(i % 4 == 0),
                Value::Text(format!("{:09}", 100_000_000 + i)),
            ]);
        }
        for _ in 0..city_canaries {
            rows.push(vec![
                Value::Text("CANARY-NAME-7f3a".into()),
                Value::Text("CANARY-CITY".into()),
                Value::Decimal("987654.321".into()),
                Value::Date(time::parse_date("2031-07-19").unwrap()),
                Value::Null,
                Value::Text("CANARY-SSN-123456789".into()),
            ]);
        }
        p.add(rows.iter().map(Vec::as_slice));
        p.finish("people", &RowFilter::AllRows).payload(policy)
    }

    fn categories_on_city(k: u64) -> PrivacyPolicy {
        PrivacyPolicy {
            columns: BTreeMap::from([
                ("city".to_owned(), Privacy::Categories),
                ("ssn".to_owned(), Privacy::Hidden),
            ]),
            k,
            exact_extremes: BTreeSet::new(),
        }
    }

    #[test]
    fn no_canary_leaves_under_any_policy_that_forbids_it() {
        for policy in [PrivacyPolicy::default(), categories_on_city(10)] {
            let text = serde_json::to_string(&profile(&policy, 9)).unwrap();
            for canary in [
                "CANARY",
                "987654",
                "2031-07-19",
                "person-",
                "Paris",
                "123456789",
            ] {
                let allowed =
                    canary == "Paris" && policy.columns.get("city") == Some(&Privacy::Categories);
                assert_eq!(text.contains(canary), allowed, "{canary} in {text}");
            }
        }
    }

    #[test]
    fn a_category_under_k_never_appears_one_at_k_does() {
        let under = profile(&categories_on_city(10), 9);
        let city = under.columns.iter().find(|c| c.name == "city").unwrap();
        let values: Vec<&str> = city
            .categories
            .iter()
            .flatten()
            .map(|c| c.value.as_str())
            .collect();
        assert_eq!(values.len(), 3, "{values:?}");
        assert!(!values.contains(&"CANARY-CITY"));
        let at = profile(&categories_on_city(10), 10);
        let city = at.columns.iter().find(|c| c.name == "city").unwrap();
        assert!(
            city.categories
                .iter()
                .flatten()
                .any(|c| c.value == "CANARY-CITY" && c.count == 10)
        );
    }

    #[test]
    fn extremes_are_rounded_unless_allowed_and_hidden_columns_are_gone() {
        let payload = profile(&PrivacyPolicy::default(), 1);
        let amount = payload.columns.iter().find(|c| c.name == "amount").unwrap();
        let n = amount.numeric.as_ref().unwrap();
        assert_eq!((n.min, n.max), (10.0, 990_000.0));
        let day = payload.columns.iter().find(|c| c.name == "day").unwrap();
        assert_eq!(day.range.as_ref().unwrap().max, "2031-07");
        let exact = PrivacyPolicy {
            exact_extremes: BTreeSet::from(["amount".to_owned(), "day".to_owned()]),
            ..PrivacyPolicy::default()
        };
        let text = serde_json::to_string(&profile(&exact, 1)).unwrap();
        assert!(
            text.contains("987654.321") && text.contains("2031-07-19"),
            "{text}"
        );
        let hidden = profile(&categories_on_city(10), 1);
        assert_eq!(hidden.hidden_columns, 1);
        assert!(hidden.columns.iter().all(|c| c.name != "ssn"));
    }

    #[test]
    fn statistics_need_k_values() {
        let mut p = Profiler::new(
            &[("x".to_owned(), ColumnType::Int)],
            &PrivacyPolicy::default(),
        );
        p.add([&[Value::Int(424_242)][..]]);
        let payload = p
            .finish("t", &RowFilter::AllRows)
            .payload(&PrivacyPolicy::default());
        assert!(payload.columns[0].numeric.is_none());
        assert!(!serde_json::to_string(&payload).unwrap().contains("424"));
    }

    #[test]
    fn the_filter_shape_names_columns_and_operators_never_values() {
        let filter = RowFilter::AnyOf(vec![vec![silo_types::Predicate {
            column: "tenant".into(),
            op: silo_types::Op::Eq,
            values: vec![Value::Text("acme-secret".into())],
        }]]);
        let p = Profiler::new(&[], &PrivacyPolicy::default()).finish("t", &filter);
        let text = serde_json::to_string(&p.payload(&PrivacyPolicy::default())).unwrap();
        assert!(text.contains("tenant ="), "{text}");
        assert!(!text.contains("acme-secret"));
    }

    #[test]
    fn the_payload_follows_its_schema() {
        let schema: serde_json::Value = serde_json::from_str(PAYLOAD_JSON_SCHEMA).unwrap();
        let payload = serde_json::to_value(profile(&categories_on_city(10), 10)).unwrap();
        let required = |s: &serde_json::Value| -> Vec<String> {
            s["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for key in required(&schema) {
            assert!(payload.get(&key).is_some(), "{key}");
        }
        for key in payload.as_object().unwrap().keys() {
            assert!(
                schema["properties"].get(key).is_some(),
                "{key} not in schema"
            );
        }
        let column = &schema["$defs"]["column"];
        for c in payload["columns"].as_array().unwrap() {
            for key in required(column) {
                assert!(c.get(&key).is_some(), "{key}");
            }
            for key in c.as_object().unwrap().keys() {
                assert!(
                    column["properties"].get(key).is_some(),
                    "{key} not in schema"
                );
            }
        }
    }

    #[test]
    fn builtin_summary_reads_the_payload() {
        let payload = profile(&categories_on_city(10), 10);
        let text = llm::builtin(&payload);
        assert!(text.contains("1,010 rows"), "{text}");
        assert!(text.contains("most common: Paris (334)"), "{text}");
        assert!(text.contains("1 column(s) hidden"), "{text}");
        assert_eq!(text, llm::builtin(&payload), "deterministic");
    }
}

#[cfg(test)]
mod scale {
    use super::*;

    /// 10 million rows: memory stays that of the sketches, and the sketch
    /// statistics agree with exact values within their stated error.
    #[test]
    fn ten_million_rows_keep_memory_flat_and_stats_accurate() {
        const ROWS: i64 = 10_000_000;
        const DISTINCT: i64 = 250_000;
        let policy = PrivacyPolicy {
            columns: BTreeMap::from([("city".to_owned(), Privacy::Categories)]),
            ..PrivacyPolicy::default()
        };
        let columns = [
            ("n".to_owned(), ColumnType::Int),
            ("city".to_owned(), ColumnType::Text),
        ];
        let cities: Vec<String> = (0..40).map(|i| format!("city-{i}")).collect();
        let mut p = Profiler::new(&columns, &policy);
        let mut batch = Vec::with_capacity(4096);
        let mut after_first_million = 0;
        let (mut sum, mut sum_sq) = (0f64, 0f64);
        for i in 0..ROWS {
            let n = (mix64(i as u64) % DISTINCT as u64) as i64;
            sum += n as f64;
            sum_sq += (n as f64) * (n as f64);
            batch.push(vec![
                Value::Int(n),
                Value::Text(cities[(i % 40) as usize].clone()),
            ]);
            if batch.len() == 4096 {
                p.add(batch.iter().map(Vec::as_slice));
                batch.clear();
            }
            if i == 1_000_000 {
                after_first_million = p.heap_bytes();
            }
        }
        p.add(batch.iter().map(Vec::as_slice));
        assert!(
            p.heap_bytes() <= after_first_million + 1024,
            "{} bytes after 10M rows, {after_first_million} after 1M",
            p.heap_bytes()
        );
        assert!(p.heap_bytes() < 256 * 1024, "{}", p.heap_bytes());
        let payload = p.finish("t", &RowFilter::AllRows).payload(&PrivacyPolicy {
            exact_extremes: BTreeSet::from(["n".to_owned()]),
            ..policy
        });
        let n = &payload.columns[0];
        let stats = n.numeric.as_ref().unwrap();
        let mean = sum / ROWS as f64;
        let stddev = (sum_sq / ROWS as f64 - mean * mean).sqrt();
        assert!(
            (stats.mean - mean).abs() / mean < 1e-9,
            "{} vs {mean}",
            stats.mean
        );
        assert!((stats.stddev - stddev).abs() / stddev < 1e-6);
        // Uniform over [0, DISTINCT): the median is DISTINCT / 2 within the
        // sketch's 1% (and sampling noise far below it).
        let p50 = stats.quantiles["p50"];
        assert!(
            (p50 - DISTINCT as f64 / 2.0).abs() / (DISTINCT as f64 / 2.0) < 0.015,
            "{p50}"
        );
        let distinct_err = (n.distinct_estimate as f64 - DISTINCT as f64).abs() / DISTINCT as f64;
        assert!(
            distinct_err < 3.0 * 0.0163,
            "{} distinct",
            n.distinct_estimate
        );
        let city = &payload.columns[1];
        assert_eq!(city.categories.as_ref().unwrap().len(), 20, "capped");
        assert_eq!(city.categories.as_ref().unwrap()[0].count, ROWS as u64 / 40);
    }
}
