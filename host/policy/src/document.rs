//! The document (MongoDB) half of enforcement: what a connector's filter or
//! pipeline may contain, and the user's filter in front of every read.
//!
//! Deny by default. A pipeline is a list of stages from an allow-list; the
//! first stage of every read is the user's `$match`, and every stage that
//! reads another collection (`$lookup`, `$unionWith`) may name only a
//! governed collection, whose own user filter is injected into it. Operators
//! that write or run code are refused wherever they appear.
//!
//! The `$match` alone is no fence: MongoDB coalesces it with a connector's
//! `$match` into one `$and` whose clauses it orders as it likes, and moves a
//! connector's `$match` ahead of any stage that does not compute the fields
//! it reads, so a connector expression (a `$convert`, a `$toInt`) would run
//! on another tenant's document, and its error (or its absence) would tell.
//! So right after the `$match` comes the *fence*: a `$replaceWith` whose new
//! document holds only the granted fields, each only where the user's filter
//! (as an expression) holds. Every field after it is computed, so nothing the
//! connector writes can be placed before it, and whatever were evaluated
//! early would see an empty document. `find`, `count` and `distinct` with a
//! filter of the connector's own run as such a pipeline too; with none (or
//! the user's filter sent back), no connector code runs and the plain query
//! is used.
//!
//! `$graphLookup` is refused: its only hook for a filter,
//! `restrictSearchWithMatch`, is silently ignored by some MongoDB-wire servers
//! (SecantusDB 0.7 accepts it and traverses everything), so the host could not
//! know that the user's filter held.
use bson::{Bson, Document, doc};
use silo_types::document::is_plain_field;

use super::sql::GovernedTable;

/// Stages that only reshape the documents already in the pipeline.
const RESHAPING_STAGES: &[&str] = &[
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$limit",
    "$skip",
    "$sort",
    "$group",
    "$count",
    "$unwind",
    "$replaceRoot",
    "$replaceWith",
    "$sample",
    "$bucket",
    "$bucketAuto",
    "$sortByCount",
    "$setWindowFields",
    "$densify",
    "$fill",
    "$redact",
];

/// Operators refused at any depth: they write (`$out`, `$merge`) or run
/// server-side JavaScript.
const FORBIDDEN_OPERATORS: &[&str] = &["$out", "$merge", "$where", "$function", "$accumulator"];

/// Most stages in one pipeline, nested pipelines included.
const MAX_STAGES: usize = 64;
/// Deepest nesting of documents and arrays in a filter or pipeline.
const MAX_DEPTH: usize = 48;

/// A governed `find`: the user's filter as the query, the projection, the
/// limit. Used only when the connector's own filter adds nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Find {
    /// The query document.
    pub filter: Document,
    /// Only the requested top-level fields.
    pub projection: Document,
    /// Most documents.
    pub limit: Option<i64>,
}

/// How a governed read runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// A plain query: no connector expression is evaluated.
    Find(Find),
    /// A pipeline behind the user's `$match` and the fence.
    Aggregate(Vec<Document>),
}

/// Why a filter or pipeline was refused. Shown to the connector.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(msg.into()))
}

/// The collections one fetch may read, each with this user's filter.
pub struct Governed<'a> {
    /// The datasource's database.
    pub database: &'a str,
    /// Governed collections (the grant's tables).
    pub collections: &'a [GovernedTable],
}

impl Governed<'_> {
    fn table(&self, collection: &str) -> Result<&GovernedTable, Refused> {
        self.collections
            .iter()
            .find(|t| t.schema == self.database && t.name == collection)
            .ok_or_else(|| {
                Refused(format!(
                    "collection `{collection}` is not governed: a connector reads only its datasource's governed collections"
                ))
            })
    }

    /// The user's filter on `collection` as a query document, or a refusal
    /// if the collection is not governed.
    pub fn user_match(&self, collection: &str) -> Result<Document, Refused> {
        let json = self
            .table(collection)?
            .filter
            .to_mongo_query()
            .map_err(Refused)?;
        match Bson::try_from(json) {
            Ok(Bson::Document(d)) => Ok(d),
            _ => refuse(format!("the filter on `{collection}` has no document form")),
        }
    }

    /// The stages every read of `collection` starts with: the user's
    /// `$match`, then the fence (see the module docs).
    pub fn fenced(&self, collection: &str) -> Result<Vec<Document>, Refused> {
        let table = self.table(collection)?;
        let guard = Bson::try_from(table.filter.to_mongo_guard().map_err(Refused)?)
            .map_err(|_| Refused(format!("the filter on `{collection}` has no document form")))?;
        let kept = match &table.columns {
            None => Bson::String("$$ROOT".into()),
            Some(columns) => {
                let mut fields = Document::new();
                for c in columns.iter().filter(|c| is_plain_field(c)) {
                    fields.insert(c.clone(), format!("${c}"));
                }
                Bson::Document(fields)
            }
        };
        Ok(vec![
            doc! { "$match": self.user_match(collection)? },
            doc! { "$replaceWith": { "$cond": [guard, kept, {}] } },
        ])
    }

    /// Refuses a field the user's grants hide.
    fn granted(&self, collection: &str, field: &str) -> Result<(), Refused> {
        match &self.table(collection)?.columns {
            Some(columns) if !columns.iter().any(|c| c == field) => {
                refuse(format!("field `{field}` is not granted to this user"))
            }
            _ => Ok(()),
        }
    }

    /// `pipeline` (the connector's stages) on `collection`, governed, behind
    /// the user's `$match` and the fence.
    pub fn pipeline(&self, collection: &str, pipeline: Bson) -> Result<Vec<Document>, Refused> {
        let Bson::Array(stages) = pipeline else {
            return refuse("a pipeline is a JSON array of stages");
        };
        let mut budget = MAX_STAGES;
        let mut out = self.fenced(collection)?;
        out.extend(self.stages(stages, &mut budget)?);
        Ok(out)
    }

    /// A `find`: the user's filter and the connector's, only `fields`
    /// returned, at most `limit` documents.
    pub fn find(
        &self,
        collection: &str,
        filter: Bson,
        fields: &[String],
        limit: Option<u64>,
    ) -> Result<Read, Refused> {
        let mut projection = Document::new();
        for f in fields {
            if !is_plain_field(f) {
                return refuse(format!("`{f}` is not a top-level field name"));
            }
            self.granted(collection, f)?;
            projection.insert(f.clone(), 1_i32);
        }
        if !fields.iter().any(|f| f == "_id") {
            projection.insert("_id", 0_i32);
        }
        let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        match self.own_filter(collection, filter)? {
            None => Ok(Read::Find(Find {
                filter: self.user_match(collection)?,
                projection,
                limit,
            })),
            Some(own) => {
                let mut pipeline = self.fenced(collection)?;
                pipeline.push(doc! { "$match": own });
                if let Some(n) = limit {
                    pipeline.push(doc! { "$limit": n });
                }
                pipeline.push(doc! { "$project": projection });
                Ok(Read::Aggregate(pipeline))
            }
        }
    }

    /// A `count`: the matching documents, counted as `n`.
    pub fn count(&self, collection: &str, filter: Bson) -> Result<Vec<Document>, Refused> {
        let mut out = self.filtered(collection, filter)?;
        out.push(doc! { "$count": "n" });
        Ok(out)
    }

    /// A `distinct`: one document per distinct value of `field`, as `_id`.
    pub fn distinct(
        &self,
        collection: &str,
        field: &str,
        filter: Bson,
    ) -> Result<Vec<Document>, Refused> {
        if !is_plain_field(field) {
            return refuse(format!("`{field}` is not a top-level field name"));
        }
        self.granted(collection, field)?;
        let mut out = self.filtered(collection, filter)?;
        out.push(doc! { "$group": { "_id": format!("${field}") } });
        Ok(out)
    }

    /// The connector's own filter, if it adds anything to the user's: a
    /// connector that pushed the user's filter down sends it back as is, and
    /// matching it twice would only cost the server time.
    fn own_filter(&self, collection: &str, filter: Bson) -> Result<Option<Document>, Refused> {
        let Bson::Document(filter) = filter else {
            return refuse("a filter is a JSON object");
        };
        check_operators(&Bson::Document(filter.clone()), 0)?;
        let user = self.user_match(collection)?;
        Ok((!filter.is_empty() && filter != user).then_some(filter))
    }

    /// The stages a `count` or `distinct` starts with: the user's `$match`,
    /// and, when the connector adds a filter, the fence and that filter.
    fn filtered(&self, collection: &str, filter: Bson) -> Result<Vec<Document>, Refused> {
        Ok(match self.own_filter(collection, filter)? {
            None => vec![doc! { "$match": self.user_match(collection)? }],
            Some(own) => {
                let mut out = self.fenced(collection)?;
                out.push(doc! { "$match": own });
                out
            }
        })
    }

    fn stages(&self, stages: Vec<Bson>, budget: &mut usize) -> Result<Vec<Document>, Refused> {
        stages
            .into_iter()
            .map(|stage| {
                *budget = budget
                    .checked_sub(1)
                    .ok_or_else(|| Refused(format!("more than {MAX_STAGES} stages")))?;
                self.stage(stage, budget)
            })
            .collect()
    }

    fn stage(&self, stage: Bson, budget: &mut usize) -> Result<Document, Refused> {
        let Bson::Document(stage) = stage else {
            return refuse("a stage is a JSON object");
        };
        let mut entries = stage.into_iter();
        let (Some((name, body)), None) = (entries.next(), entries.next()) else {
            return refuse("a stage has exactly one key, its name");
        };
        let body = match name.as_str() {
            n if RESHAPING_STAGES.contains(&n) => {
                check_operators(&body, 0)?;
                body
            }
            "$facet" => self.facet(body, budget)?,
            "$lookup" => self.lookup(body, budget)?,
            "$unionWith" => self.union_with(body, budget)?,
            other => return refuse(format!("stage `{other}` is not allowed")),
        };
        let mut out = Document::new();
        out.insert(name, body);
        Ok(out)
    }

    /// Sub-pipelines read the facet's (already filtered) input.
    fn facet(&self, body: Bson, budget: &mut usize) -> Result<Bson, Refused> {
        let Bson::Document(facets) = body else {
            return refuse("$facet takes an object of pipelines");
        };
        let mut out = Document::new();
        for (name, pipeline) in facets {
            let Bson::Array(stages) = pipeline else {
                return refuse("each $facet output is a pipeline");
            };
            let governed = self.stages(stages, budget)?;
            out.insert(
                name,
                governed.into_iter().map(Bson::Document).collect::<Vec<_>>(),
            );
        }
        Ok(Bson::Document(out))
    }

    /// `$lookup` into a governed collection, its pipeline behind that
    /// collection's user filter.
    fn lookup(&self, body: Bson, budget: &mut usize) -> Result<Bson, Refused> {
        let Bson::Document(mut spec) = body else {
            return refuse("$lookup takes an object");
        };
        let from = self.target(&mut spec, "from", "$lookup")?;
        let inner = match spec.remove("pipeline") {
            Some(Bson::Array(stages)) => self.stages(stages, budget)?,
            Some(_) => return refuse("$lookup's pipeline is an array of stages"),
            None => Vec::new(),
        };
        check_operators(&Bson::Document(spec.clone()), 0)?;
        // The join's own equality reads the foreign field of every document:
        // only a granted one.
        if let Some(Bson::String(field)) = spec.get("foreignField") {
            let top = field.split('.').next().unwrap_or_default();
            self.granted(&from, top)?;
        }
        // Always the pipeline form, behind the foreign collection's fence: a
        // plain `$lookup` would join (and let MongoDB merge a later `$match`
        // into the join) over every tenant's documents.
        let mut pipeline: Vec<Bson> = self
            .fenced(&from)?
            .into_iter()
            .map(Bson::Document)
            .collect();
        pipeline.extend(inner.into_iter().map(Bson::Document));
        spec.insert("from", from);
        spec.insert("pipeline", pipeline);
        Ok(Bson::Document(spec))
    }

    /// `$unionWith` a governed collection, behind its user filter.
    fn union_with(&self, body: Bson, budget: &mut usize) -> Result<Bson, Refused> {
        let mut spec = match body {
            Bson::String(coll) => doc! { "coll": coll },
            Bson::Document(d) => d,
            _ => return refuse("$unionWith takes a collection name or an object"),
        };
        let coll = self.target(&mut spec, "coll", "$unionWith")?;
        let inner = match spec.remove("pipeline") {
            Some(Bson::Array(stages)) => self.stages(stages, budget)?,
            Some(_) => return refuse("$unionWith's pipeline is an array of stages"),
            None => Vec::new(),
        };
        if let Some(key) = spec.keys().next() {
            return refuse(format!("$unionWith option `{key}` is not allowed"));
        }
        let mut pipeline: Vec<Bson> = self
            .fenced(&coll)?
            .into_iter()
            .map(Bson::Document)
            .collect();
        pipeline.extend(inner.into_iter().map(Bson::Document));
        Ok(Bson::Document(doc! { "coll": coll, "pipeline": pipeline }))
    }

    /// The collection a stage reads: a plain name, in this database.
    fn target(&self, spec: &mut Document, key: &str, stage: &str) -> Result<String, Refused> {
        if spec.contains_key("db") {
            return refuse(format!("{stage} may not name another database"));
        }
        match spec.remove(key) {
            Some(Bson::String(name)) => {
                self.table(&name)?;
                Ok(name)
            }
            _ => refuse(format!("{stage} needs `{key}`: a collection name")),
        }
    }
}

/// Refuses writing and code-running operators at any depth, and nesting
/// deeper than [`MAX_DEPTH`].
fn check_operators(value: &Bson, depth: usize) -> Result<(), Refused> {
    if depth > MAX_DEPTH {
        return refuse(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    match value {
        Bson::Document(d) => {
            for (k, v) in d {
                if FORBIDDEN_OPERATORS.contains(&k.as_str()) {
                    return refuse(format!("operator `{k}` is not allowed"));
                }
                check_operators(v, depth + 1)?;
            }
            Ok(())
        }
        Bson::Array(items) => items.iter().try_for_each(|v| check_operators(v, depth + 1)),
        Bson::JavaScriptCode(_) | Bson::JavaScriptCodeWithScope(_) => {
            refuse("JavaScript code is not allowed")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_types::{Op, Predicate, RowFilter, Value};

    fn tenant(t: &str) -> RowFilter {
        RowFilter::AnyOf(vec![vec![Predicate {
            column: "tenant".into(),
            op: Op::Eq,
            values: vec![Value::Text(t.into())],
        }]])
    }

    fn collections() -> Vec<GovernedTable> {
        ["orders", "customers"]
            .iter()
            .map(|n| GovernedTable {
                schema: "test".into(),
                name: (*n).into(),
                filter: tenant("a"),
                columns: None,
            })
            .collect()
    }

    fn parse(text: &str) -> Bson {
        Bson::try_from(serde_json::from_str::<serde_json::Value>(text).unwrap()).unwrap()
    }

    #[test]
    fn user_match_comes_first_and_lookups_get_their_own() {
        let c = collections();
        let g = Governed {
            database: "test",
            collections: &c,
        };
        let p = g
            .pipeline(
                "orders",
                parse(r#"[{"$lookup": {"from": "customers", "localField": "c", "foreignField": "_id", "as": "x"}}, {"$limit": 5}]"#),
            )
            .unwrap();
        // The user's match, then the fence, then the connector's stages.
        let fenced = g.fenced("orders").unwrap();
        assert_eq!(p[0], doc! { "$match": g.user_match("orders").unwrap() });
        assert_eq!(p[..2], fenced[..]);
        assert!(p[1].get_document("$replaceWith").is_ok(), "{:?}", p[1]);
        let inner = p[2]
            .get_document("$lookup")
            .unwrap()
            .get_array("pipeline")
            .unwrap();
        let customers: Vec<Bson> = g
            .fenced("customers")
            .unwrap()
            .into_iter()
            .map(Bson::Document)
            .collect();
        assert_eq!(inner[..], customers[..]);
        assert_eq!(p[3], doc! { "$limit": 5_i32 });
    }

    #[test]
    fn refuses_writes_code_and_ungoverned_reads() {
        let c = collections();
        let g = Governed {
            database: "test",
            collections: &c,
        };
        let cases = [
            (r#"[{"$out": "copy"}]"#, "$out"),
            (r#"[{"$merge": {"into": "orders"}}]"#, "$merge"),
            (r#"[{"$match": {"$where": "true"}}]"#, "$where"),
            (
                r#"[{"$addFields": {"x": {"$function": {"body": "f", "args": [], "lang": "js"}}}}]"#,
                "$function",
            ),
            (
                r#"[{"$group": {"_id": null, "x": {"$accumulator": {}}}}]"#,
                "$accumulator",
            ),
            (
                r#"[{"$lookup": {"from": "salaries", "as": "x", "pipeline": []}}]"#,
                "salaries",
            ),
            (r#"[{"$unionWith": "salaries"}]"#, "salaries"),
            (
                r#"[{"$graphLookup": {"from": "orders", "startWith": "$a", "connectFromField": "a", "connectToField": "b", "as": "g"}}]"#,
                "$graphLookup",
            ),
            (
                r#"[{"$lookup": {"from": "orders", "db": "admin", "as": "x"}}]"#,
                "another database",
            ),
            (
                r#"[{"$facet": {"a": [{"$unionWith": "salaries"}]}}]"#,
                "salaries",
            ),
            (r#"[{"$collStats": {}}]"#, "$collStats"),
            (r#"[{"$match": {}, "$limit": 1}]"#, "exactly one key"),
        ];
        for (pipeline, needle) in cases {
            let err = g
                .pipeline("orders", parse(pipeline))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{pipeline}: {err}");
        }
        let err = g.pipeline("salaries", parse("[]")).unwrap_err().to_string();
        assert!(err.contains("not governed"), "{err}");
    }
}
