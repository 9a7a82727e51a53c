//! The HTTP capability's policy: which requests a connector may make.
//!
//! A request names a path on the datasource's one base URL. The path must be
//! plain (no dot segments, no encoded slashes, no empty segments) and lie
//! under a prefix the datasource maps to a governed dataset; that dataset's
//! filter for the embed user then binds the request: none at all when it
//! admits no rows, and each parameter the datasource binds to a filter column
//! must carry only values the filter pins that column to. So the API itself
//! is asked only for the user's data, below the connector, and the rows that
//! come back are still re-checked.
use silo_types::http::{Bound, param_text};

use crate::policy::sql::GovernedTable;

/// Longest path a connector may request.
pub const MAX_PATH_BYTES: usize = 2048;
/// Most query parameters on one request.
pub const MAX_PARAMS: usize = 64;
/// Longest query (names and values) on one request, before encoding.
pub const MAX_QUERY_BYTES: usize = 8 << 10;

/// A refused request, worded for the connector author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What a datasource allows, as its configuration says.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Path prefixes and the governed dataset each serves.
    pub paths: Vec<(String, String)>,
    /// Query parameters bound to filter columns: (parameter, column).
    pub bind: Vec<(String, String)>,
}

impl Rules {
    /// Checks a configured prefix the way requests are checked, so that no
    /// prefix can match paths the request check would refuse.
    pub fn check_prefix(prefix: &str) -> Result<(), Refused> {
        check_path(prefix)
    }

    /// Admits `GET path?query` for a fetch whose governed datasets carry
    /// their filters in `datasets`; returns the dataset it is for.
    pub fn admit<'a>(
        &'a self,
        path: &str,
        query: &[(String, String)],
        datasets: &[GovernedTable],
    ) -> Result<&'a str, Refused> {
        check_path(path)?;
        let (prefix, dataset) = self
            .paths
            .iter()
            .filter(|(prefix, _)| under(path, prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .ok_or_else(|| {
                let allowed: Vec<&str> = self.paths.iter().map(|(p, _)| p.as_str()).collect();
                Refused(format!(
                    "GET {path}: the path is not under one this datasource allows ({})",
                    allowed.join(", ")
                ))
            })?;
        let filter = &datasets
            .iter()
            .find(|t| &t.name == dataset)
            .ok_or_else(|| {
                Refused(format!(
                    "GET {path}: {prefix} serves dataset `{dataset}`, which is not governed here"
                ))
            })?
            .filter;
        if query.len() > MAX_PARAMS
            || query.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_QUERY_BYTES
        {
            return Err(Refused(format!(
                "GET {path}: at most {MAX_PARAMS} query parameters and {MAX_QUERY_BYTES} bytes"
            )));
        }
        if let silo_types::RowFilter::NoRows = filter {
            return Err(Refused(format!(
                "GET {path}: the embed user may see no rows of `{dataset}` (or this instance only describes)"
            )));
        }
        for (param, column) in &self.bind {
            let given: Vec<&str> = query
                .iter()
                .filter(|(k, _)| k == param)
                .map(|(_, v)| v.as_str())
                .collect();
            let allowed: Vec<String> = match filter.bound_values(column) {
                Bound::Any => continue,
                Bound::Unbound => {
                    return Err(Refused(format!(
                        "GET {path}: the host binds `{param}` to column `{column}`, but the row \
                         filter on `{dataset}` does not pin `{column}` to values"
                    )));
                }
                Bound::Values(v) => v.iter().filter_map(param_text).collect(),
            };
            if given.is_empty() {
                return Err(Refused(format!(
                    "GET {path}: query parameter `{param}` is required (the host binds it to the \
                     row filter's `{column}`)"
                )));
            }
            if let Some(bad) = given.iter().find(|v| !allowed.iter().any(|a| a == *v)) {
                return Err(Refused(format!(
                    "GET {path}: `{param}={bad}` is outside the embed user's row filter on `{column}`"
                )));
            }
        }
        Ok(dataset)
    }
}

/// Whether `path` is `prefix` or below it, segment-wise.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A path the host sends as written: absolute, printable ASCII of the RFC
/// 3986 path alphabet, no empty or dot segments, and no escape that decodes
/// to a separator, a dot, a control character or a non-ASCII byte (servers
/// differ in how they normalise those, so none is sent at all).
fn check_path(path: &str) -> Result<(), Refused> {
    let refuse = |why: &str| Err(Refused(format!("GET {}: {why}", printable(path))));
    if !path.starts_with('/') {
        return refuse("a path starts with `/` (no scheme or host: the datasource fixes those)");
    }
    if path.len() > MAX_PATH_BYTES {
        return refuse("the path is too long");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let decoded = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match decoded {
                Some(d) if d.is_ascii_graphic() && !matches!(d, b'/' | b'\\' | b'.' | b'%') => {}
                _ => {
                    return refuse("the path holds an escape for a separator, dot or control byte");
                }
            }
            i += 3;
            continue;
        }
        let ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if !ok {
            return refuse(
                "the path holds a character outside the URL path alphabet (`?`, `#`, `\\`, space, …); give the query as pairs",
            );
        }
        i += 1;
    }
    for segment in path[1..].split('/') {
        if segment == "." || segment == ".." {
            return refuse("the path holds a `.` or `..` segment");
        }
    }
    if path.contains("//") {
        return refuse("the path holds an empty segment (`//`)");
    }
    Ok(())
}

/// `s` with anything but printable ASCII escaped, cut short: safe to log.
fn printable(s: &str) -> String {
    s.chars()
        .take(200)
        .flat_map(|c| {
            if c.is_ascii_graphic() {
                vec![c]
            } else {
                c.escape_default().collect()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_types::{Op, Predicate, RowFilter, Value};

    fn rules() -> Rules {
        Rules {
            paths: vec![
                ("/api/orders".into(), "orders".into()),
                ("/api/orders/archive".into(), "archive".into()),
            ],
            bind: vec![("tenant".into(), "tenant".into())],
        }
    }

    fn governed(filter: RowFilter) -> Vec<GovernedTable> {
        vec![
            GovernedTable {
                schema: String::new(),
                name: "orders".into(),
                filter,
                columns: None,
            },
            GovernedTable {
                schema: String::new(),
                name: "archive".into(),
                filter: RowFilter::NoRows,
                columns: None,
            },
        ]
    }

    fn tenant(values: &[&str]) -> RowFilter {
        RowFilter::AnyOf(vec![vec![Predicate {
            column: "tenant".into(),
            op: Op::In,
            values: values.iter().map(|v| Value::Text((*v).into())).collect(),
        }]])
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn paths_outside_the_allow_list_or_not_plain_are_refused() {
        let r = rules();
        let d = governed(RowFilter::AllRows);
        assert_eq!(r.admit("/api/orders", &[], &d), Ok("orders"));
        assert_eq!(r.admit("/api/orders/17", &[], &d), Ok("orders"));
        for bad in [
            "/api/ordersx",
            "/admin",
            "api/orders",
            "http://127.0.0.1:1/api/orders",
            "//evil.example/api/orders",
            "/api/orders/../../admin",
            "/api/orders/%2e%2e/admin",
            "/api/orders/%2F..%2Fadmin",
            "/api/orders/a%00",
            "/api/orders//x",
            "/api/orders?tenant=globex",
            "/api/orders#x",
            "/api/orders\\..\\admin",
            "/api/orders/\u{e9}",
            "/api/orders/%",
        ] {
            assert!(r.admit(bad, &[], &d).is_err(), "{bad} was admitted");
        }
        // The longest prefix decides, and a dataset with no rows refuses.
        let err = r.admit("/api/orders/archive/1", &[], &d).unwrap_err();
        assert!(err.0.contains("no rows"), "{err}");
    }

    #[test]
    fn bound_parameters_must_carry_the_filters_values() {
        let r = rules();
        let d = governed(tenant(&["acme", "initech"]));
        assert!(
            r.admit("/api/orders", &q(&[("tenant", "acme")]), &d)
                .is_ok()
        );
        assert!(
            r.admit(
                "/api/orders",
                &q(&[("tenant", "acme"), ("tenant", "initech")]),
                &d
            )
            .is_ok()
        );
        let missing = r
            .admit("/api/orders", &q(&[("page", "2")]), &d)
            .unwrap_err();
        assert!(missing.0.contains("`tenant` is required"), "{missing}");
        let other = r
            .admit(
                "/api/orders",
                &q(&[("tenant", "acme"), ("tenant", "globex")]),
                &d,
            )
            .unwrap_err();
        assert!(other.0.contains("tenant=globex"), "{other}");
        // A filter that does not pin the column cannot bind the parameter.
        let range = governed(RowFilter::AnyOf(vec![vec![Predicate {
            column: "amount".into(),
            op: Op::Gt,
            values: vec![Value::Int(1)],
        }]]));
        let unbound = r
            .admit("/api/orders", &q(&[("tenant", "acme")]), &range)
            .unwrap_err();
        assert!(unbound.0.contains("does not pin"), "{unbound}");
        // Everyone's rows: the parameter is free.
        let all = governed(RowFilter::AllRows);
        assert!(r.admit("/api/orders", &[], &all).is_ok());
    }
}
