//! Tries to learn other tenants' documents from what the server says while it
//! evaluates this connector's expressions: conversion errors that quote a
//! value, errors that fire only when a condition holds on some document (a
//! yes/no oracle), through `find`, `count`, `distinct`, a `$match` right
//! after the host's, `$expr`, joins and unions, and a hidden field. Its
//! users' own notes are small integers, which every conversion here
//! accepts; another tenant's are not. Everything it observes goes back out
//! as rows of its user's own tenant.
use silo_sdk::document;

const PIPELINES: &[&str] = &[
    r#"[{"$match": {"$expr": {"$gt": [{"$toInt": "$note"}, 0]}}}]"#,
    r#"[{"$match": {"$or": [{"$expr": {"$gt": [{"$toInt": "$note"}, 0]}}, {"tenant": "nobody"}]}}]"#,
    r#"[{"$addFields": {"n": {"$toInt": "$note"}}}]"#,
    r#"[{"$sort": {"id": 1}}, {"$match": {"$expr": {"$gt": [{"$toDouble": "$note"}, 0]}}}]"#,
    r#"[{"$project": {"note": 1, "id": 1}}, {"$match": {"$expr": {"$gt": [{"$toLong": "$note"}, 0]}}}]"#,
    r#"[{"$match": {"$expr": {"$eq": [{"$divide": [1, {"$cond": [{"$eq": [{"$substrCP": ["$note", 0, 1]}, "E"]}, 0, 1]}]}, 1]}}}]"#,
    r#"[{"$group": {"_id": {"$toInt": "$note"}, "n": {"$sum": 1}}}]"#,
    r#"[{"$lookup": {"from": "orders", "localField": "id", "foreignField": "id", "as": "j"}}, {"$unwind": "$j"}, {"$match": {"$expr": {"$gt": [{"$toInt": "$j.note"}, 0]}}}]"#,
    r#"[{"$lookup": {"from": "orders", "pipeline": [{"$match": {"$expr": {"$gt": [{"$toInt": "$note"}, 0]}}}], "as": "j"}}]"#,
    r#"[{"$unionWith": {"coll": "orders", "pipeline": [{"$project": {"n": {"$toInt": "$note"}}}]}}]"#,
    r#"[{"$match": {"secret": {"$exists": true}}}]"#,
    r#"[{"$project": {"note": "$secret", "id": 1}}]"#,
    r#"[{"$replaceWith": "$$ROOT"}]"#,
];

const FILTERS: &[&str] = &[
    r#"{"$expr": {"$gt": [{"$toInt": "$note"}, 0]}}"#,
    r#"{"$and": [{"note": {"$regex": "^Europe"}}, {"$expr": {"$gt": [{"$toInt": "$note"}, 0]}}]}"#,
    r#"{"note": {"$regex": "^Europe"}}"#,
    r#"{"secret": {"$exists": true}}"#,
];

silo_guest_common::hostile_connector!(MongodbObserver, |request| {
    let fields = vec![
        "id".to_owned(),
        "note".to_owned(),
        "secret".to_owned(),
        "n".to_owned(),
    ];
    let mut seen = Vec::new();
    for p in PIPELINES {
        let out = silo_guest_common::observe(document::aggregate("orders", p, &fields));
        seen.push(format!("aggregate {p} => {out}"));
    }
    for f in FILTERS {
        let out = silo_guest_common::observe(document::find("orders", f, &fields, None));
        seen.push(format!("find {f} => {out}"));
        let count = document::count("orders", f).map_err(|e| format!("{e:?}"));
        seen.push(format!("count {f} => {count:?}"));
        let distinct = document::distinct("orders", "note", f).map_err(|e| format!("{e:?}"));
        seen.push(format!("distinct note {f} => {distinct:?}"));
    }
    let secret = document::distinct("orders", "secret", "{}").map_err(|e| format!("{e:?}"));
    seen.push(format!("distinct secret => {secret:?}"));
    silo_guest_common::exfiltrate(&request, seen)
});
