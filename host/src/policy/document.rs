//! The document (MongoDB) half of enforcement: what a connector's filter or
//! pipeline may contain, and the user's filter in front of every read.
//!
//! Deny by default. A pipeline is a list of stages from an allow-list; the
//! first stage of every read is the user's `$match`, and every stage that
//! reads another collection (`$lookup`, `$unionWith`) may name only a
//! governed collection, whose own user filter is injected into it. Operators
//! that write or run code are refused wherever they appear.
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

/// A governed `find`: the query (the user's filter, and the connector's if it
/// adds anything), the projection, the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Find {
    /// The query document.
    pub filter: Document,
    /// Only the requested top-level fields.
    pub projection: Document,
    /// Most documents.
    pub limit: Option<i64>,
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
    /// The user's filter on `collection` as a query document, or a refusal
    /// if the collection is not governed.
    pub fn user_match(&self, collection: &str) -> Result<Document, Refused> {
        let table = self
            .collections
            .iter()
            .find(|t| t.schema == self.database && t.name == collection)
            .ok_or_else(|| {
                Refused(format!(
                    "collection `{collection}` is not governed: a connector reads only its datasource's governed collections"
                ))
            })?;
        let json = table.filter.to_mongo_query().map_err(Refused)?;
        match Bson::try_from(json) {
            Ok(Bson::Document(d)) => Ok(d),
            _ => refuse(format!("the filter on `{collection}` has no document form")),
        }
    }

    /// `pipeline` (the connector's stages) on `collection`, governed, behind
    /// the user's `$match`.
    pub fn pipeline(&self, collection: &str, pipeline: Bson) -> Result<Vec<Document>, Refused> {
        let Bson::Array(stages) = pipeline else {
            return refuse("a pipeline is a JSON array of stages");
        };
        let mut budget = MAX_STAGES;
        let mut out = vec![doc! { "$match": self.user_match(collection)? }];
        out.extend(self.stages(stages, &mut budget)?);
        Ok(out)
    }

    /// A `find`: the user's filter and the connector's, only `fields`
    /// projected, at most `limit` documents.
    pub fn find(
        &self,
        collection: &str,
        filter: Bson,
        fields: &[String],
        limit: Option<u64>,
    ) -> Result<Find, Refused> {
        let mut queries = self.queries(collection, filter)?;
        let filter = match queries.len() {
            1 => queries.remove(0),
            _ => doc! { "$and": queries },
        };
        let mut projection = Document::new();
        for f in fields {
            if !is_plain_field(f) {
                return refuse(format!("`{f}` is not a top-level field name"));
            }
            projection.insert(f.clone(), 1_i32);
        }
        if !fields.iter().any(|f| f == "_id") {
            projection.insert("_id", 0_i32);
        }
        Ok(Find {
            filter,
            projection,
            limit: limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        })
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
        let mut out = self.filtered(collection, filter)?;
        out.push(doc! { "$group": { "_id": format!("${field}") } });
        Ok(out)
    }

    /// The query documents a read must pass: the user's filter, then the
    /// connector's if it adds anything.
    fn queries(&self, collection: &str, filter: Bson) -> Result<Vec<Document>, Refused> {
        let Bson::Document(filter) = filter else {
            return refuse("a filter is a JSON object");
        };
        check_operators(&Bson::Document(filter.clone()), 0)?;
        let user = self.user_match(collection)?;
        // A connector that pushed the user's filter down sends it back as is:
        // matching it twice would only cost the server time.
        let own = !filter.is_empty() && filter != user;
        let mut out = vec![user];
        if own {
            out.push(filter);
        }
        Ok(out)
    }

    /// [`Governed::queries`] as leading `$match` stages.
    fn filtered(&self, collection: &str, filter: Bson) -> Result<Vec<Document>, Refused> {
        Ok(self
            .queries(collection, filter)?
            .into_iter()
            .map(|q| doc! { "$match": q })
            .collect())
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
        let mut pipeline = vec![Bson::Document(doc! { "$match": self.user_match(&from)? })];
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
        let mut pipeline = vec![Bson::Document(doc! { "$match": self.user_match(&coll)? })];
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
                self.user_match(&name)?;
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
        assert_eq!(p[0], doc! { "$match": g.user_match("orders").unwrap() });
        let inner = p[1]
            .get_document("$lookup")
            .unwrap()
            .get_array("pipeline")
            .unwrap();
        assert_eq!(
            inner[0],
            Bson::Document(doc! { "$match": g.user_match("customers").unwrap() })
        );
        assert_eq!(p[2], doc! { "$limit": 5_i32 });
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
