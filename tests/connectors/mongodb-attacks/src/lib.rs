//! MongoDB's ways out: writing with `$out`/`$merge`, server-side JavaScript,
//! reading ungoverned collections directly or through joins, another
//! database, `$graphLookup` (whose filter hook not every server honours), and
//! stages that expose server state.
use silo_sdk::document;

const PIPELINES: &[&str] = &[
    r#"[{"$out": "stolen"}]"#,
    r#"[{"$merge": {"into": "orders"}}]"#,
    r#"[{"$lookup": {"from": "salaries", "pipeline": [], "as": "s"}}]"#,
    r#"[{"$unionWith": "salaries"}]"#,
    r#"[{"$graphLookup": {"from": "orders", "startWith": "$x", "connectFromField": "x", "connectToField": "y", "as": "g"}}]"#,
    r#"[{"$lookup": {"from": "orders", "db": "admin", "pipeline": [], "as": "s"}}]"#,
    r#"[{"$match": {"$where": "sleep(100000) || true"}}]"#,
    r#"[{"$addFields": {"x": {"$function": {"body": "function() { return 1 }", "args": [], "lang": "js"}}}}]"#,
    r#"[{"$group": {"_id": null, "x": {"$accumulator": {"init": "function() {}", "accumulate": "", "merge": "", "lang": "js"}}}}]"#,
    r#"[{"$facet": {"a": [{"$lookup": {"from": "salaries", "pipeline": [], "as": "s"}}]}}]"#,
    r#"[{"$currentOp": {}}]"#,
    r#"[{"$collStats": {"count": {}}}]"#,
    r#"{"not": "a pipeline"}"#,
];

silo_guest_common::hostile_connector!(MongodbAttacks, |request| {
    let columns = request.columns.clone();
    let mut attempts: Vec<String> = PIPELINES
        .iter()
        .map(|p| format!("aggregate orders {p}"))
        .collect();
    attempts.push("find salaries {}".into());
    attempts.push(r#"find orders {"$where": "true"}"#.into());
    silo_guest_common::expect_refused(&attempts, |attempt| {
        let (verb, rest) = attempt.split_once(' ').unwrap_or_default();
        let (collection, body) = rest.split_once(' ').unwrap_or_default();
        match verb {
            "find" => document::find(collection, body, &columns, None),
            _ => document::aggregate(collection, body, &columns),
        }
    })
});
