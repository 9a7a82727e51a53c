//! The HTTP capability's policy: which requests a connector may make.
//!
//! A request names a path on the datasource's one base URL. The path must be
//! plain (see `check_path`) and match a *path template* the datasource maps
//! to a governed dataset: literal segments, and `{column}` segments that bind
//! a filter column (`/v2/orgs/{org}/tickets`). That dataset's filter for the
//! embed user then binds the request, deny by default: every column the
//! filter reads must be pinned by it to values (`=`/`IN` in every branch) and
//! carried by the request, in a template segment or a bound query parameter,
//! with only those values. A filter that admits no rows refuses every
//! request; one that admits all rows binds nothing. So the API itself is
//! asked only for rows the user may see, below the connector, and the rows
//! that come back are still re-checked.
use silo_types::RowFilter;
use silo_types::http::{Bound, param_text};

use crate::sql::GovernedTable;

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

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matched as written.
    Literal(String),
    /// Any one segment, whose (decoded) value binds this filter column.
    Column(String),
}

/// A configured path: `/api/orders`, `/v2/orgs/{org}/tickets`. It matches a
/// request path whose first segments it matches, segment by segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

impl Template {
    /// Parses a configured path: plain segments as a request path's, and
    /// `{column}` segments naming a column (letters, digits, `_`).
    pub fn parse(text: &str) -> Result<Template, Refused> {
        let bad = |why: &str| Err(Refused(format!("path `{}`: {why}", printable(text))));
        if !text.starts_with('/') {
            return bad("a path starts with `/`");
        }
        let mut segments = Vec::new();
        let mut literal = String::new();
        for part in text[1..].split('/').filter(|p| !p.is_empty()) {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return bad("a `{column}` placeholder names a column: letters, digits and `_`");
                }
                segments.push(Segment::Column(name.to_owned()));
            } else if part.contains(['{', '}']) {
                return bad(
                    "a `{column}` placeholder must be a whole path segment, as in `/orgs/{org}/tickets`",
                );
            } else {
                literal.clear();
                literal.push('/');
                literal.push_str(part);
                check_path(&literal)
                    .map_err(|e| Refused(format!("path `{}`: {}", printable(text), e.0)))?;
                segments.push(Segment::Literal(decode(part).unwrap_or_default()));
            }
        }
        Ok(Template {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The columns its placeholders bind.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Column(c) => Some(c.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The (column, value) pairs `segments` bind, if it matches.
    fn matches(&self, segments: &[String]) -> Option<Vec<(String, String)>> {
        if segments.len() < self.segments.len() {
            return None;
        }
        let mut bound = Vec::new();
        for (want, got) in self.segments.iter().zip(segments) {
            match want {
                Segment::Literal(l) if l == got => {}
                Segment::Literal(_) => return None,
                Segment::Column(c) => bound.push((c.clone(), got.clone())),
            }
        }
        Some(bound)
    }
}

/// What a datasource allows, as its configuration says.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Path templates and the governed dataset each serves.
    pub paths: Vec<(Template, String)>,
    /// Query parameters bound to filter columns: (parameter, column).
    pub bind: Vec<(String, String)>,
}

/// An admitted request: which dataset and template it was for, and what it
/// bound (each filter column, and the value it carried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The governed dataset.
    pub dataset: String,
    /// The template it matched.
    pub template: String,
    /// Filter columns and the values the request carried for them.
    pub bound: Vec<(String, String)>,
}

impl Rules {
    /// Parses the configured templates, refusing two that match the same
    /// paths for different datasets.
    pub fn new(
        paths: Vec<(String, String)>,
        bind: Vec<(String, String)>,
    ) -> Result<Rules, Refused> {
        let paths = paths
            .into_iter()
            .map(|(p, d)| Ok((Template::parse(&p)?, d)))
            .collect::<Result<Vec<_>, Refused>>()?;
        Ok(Rules { paths, bind })
    }

    /// Templates under which no request can ever be bound to a user's rows:
    /// no placeholder and no bound parameter. Only a group that grants every
    /// row can read through them; the datasource is flagged for it.
    pub fn unbindable(&self) -> Vec<String> {
        if !self.bind.is_empty() {
            return Vec::new();
        }
        self.paths
            .iter()
            .filter(|(t, _)| t.columns().next().is_none())
            .map(|(t, d)| {
                format!(
                    "`{}` (dataset `{d}`) binds no column: no `{{column}}` segment and no bind_params, \
                     so only groups that grant all rows can read it",
                    t.as_str()
                )
            })
            .collect()
    }

    /// Admits `GET path?query` for a fetch whose governed datasets carry
    /// their filters in `datasets`.
    pub fn admit(
        &self,
        path: &str,
        query: &[(String, String)],
        datasets: &[GovernedTable],
    ) -> Result<Admitted, Refused> {
        check_path(path)?;
        let refused = |why: String| Err(Refused(format!("GET {}: {why}", printable(path))));
        let segments: Vec<String> = path[1..]
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| decode(s).unwrap_or_default())
            .collect();
        let Some((template, dataset, placed)) = self
            .paths
            .iter()
            .filter_map(|(t, d)| Some((t, d, t.matches(&segments)?)))
            .max_by_key(|(t, _, _)| (t.segments.len(), t.columns().count() == 0))
        else {
            let allowed: Vec<&str> = self.paths.iter().map(|(t, _)| t.as_str()).collect();
            return refused(format!(
                "the path matches none this datasource allows ({})",
                allowed.join(", ")
            ));
        };
        let Some(table) = datasets.iter().find(|t| &t.name == dataset) else {
            return refused(format!(
                "{} serves dataset `{dataset}`, which is not governed here",
                template.as_str()
            ));
        };
        if query.len() > MAX_PARAMS
            || query.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_QUERY_BYTES
        {
            return refused(format!(
                "at most {MAX_PARAMS} query parameters and {MAX_QUERY_BYTES} bytes"
            ));
        }
        let filter = &table.filter;
        if matches!(filter, RowFilter::NoRows) {
            return refused(format!(
                "the embed user may see no rows of `{dataset}` (or this instance only describes)"
            ));
        }
        let mut bound = Vec::new();
        for column in filter.columns() {
            // What the request carries for this column: template segments
            // and bound parameters.
            let mut carried: Vec<&str> = placed
                .iter()
                .filter(|(c, _)| c == column)
                .map(|(_, v)| v.as_str())
                .collect();
            let params: Vec<&str> = self
                .bind
                .iter()
                .filter(|(_, c)| c == column)
                .map(|(p, _)| p.as_str())
                .collect();
            for param in &params {
                let given: Vec<&str> = query
                    .iter()
                    .filter(|(k, _)| k == param)
                    .map(|(_, v)| v.as_str())
                    .collect();
                if given.is_empty() {
                    return refused(format!(
                        "query parameter `{param}` is required (the host binds it to the row \
                         filter's `{column}`)"
                    ));
                }
                carried.extend(given);
            }
            let allowed: Vec<String> = match filter.bound_values(column) {
                Bound::Any => continue,
                Bound::Unbound => {
                    return refused(format!(
                        "the row filter on `{dataset}` does not pin `{column}` to values in every \
                         branch, so no request can be limited to the embed user's rows"
                    ));
                }
                Bound::Values(v) => v.iter().filter_map(param_text).collect(),
            };
            if carried.is_empty() {
                return refused(format!(
                    "the row filter on `{dataset}` reads `{column}`, which this request does not \
                     carry: put `{{{column}}}` in the path template or bind a query parameter to it"
                ));
            }
            if let Some(bad) = carried.iter().find(|v| !allowed.iter().any(|a| a == *v)) {
                return refused(format!(
                    "`{column}` = `{}` is outside the embed user's row filter",
                    printable(bad)
                ));
            }
            bound.extend(carried.iter().map(|v| (column.to_owned(), (*v).to_owned())));
        }
        // A placeholder the filter does not read still must not reach
        // another row: it takes only values the filter pins, if any.
        for (column, value) in &placed {
            if let Bound::Values(v) = filter.bound_values(column)
                && !v.iter().filter_map(param_text).any(|a| &a == value)
            {
                return refused(format!(
                    "`{column}` = `{}` is outside the embed user's row filter",
                    printable(value)
                ));
            }
        }
        Ok(Admitted {
            dataset: dataset.clone(),
            template: template.as_str().to_owned(),
            bound,
        })
    }
}

/// A segment with its escapes decoded, or `None` for a bad escape.
fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A path the host sends as written, and that every common server (nginx,
/// Tomcat/Spring, Express, Go's mux) reads the same way:
/// - absolute, at most [`MAX_PATH_BYTES`];
/// - only the RFC 3986 path alphabet (letters, digits, `-._~!$&'()*+,=:@`,
///   `/`), without `;` (Tomcat reads `..;/` as `../`, and matrix
///   parameters differ between servers);
/// - percent-escapes only of letters, digits, `-`, `.`, `_`, `~` and space:
///   none of a reserved character (`%2F` as `/`), of `%` itself (decoded
///   twice), of a backslash (a separator on some servers), of a control
///   or a non-ASCII byte (normalised differently);
/// - no empty segment (`//`), and no segment that is, or decodes to, `.` or
///   `..`.
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
                Some(d) if d.is_ascii_alphanumeric() || b"-._~ ".contains(&d) => {}
                _ => {
                    return refuse(
                        "the path holds an escape of a reserved, `%`, `\\`, control or non-ASCII \
                         byte (give such values as query parameters)",
                    );
                }
            }
            i += 3;
            continue;
        }
        if b == b';' {
            return refuse(
                "the path holds a `;` (matrix parameters and `..;` are read differently by servers)",
            );
        }
        let ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b);
        if !ok {
            return refuse(
                "the path holds a character outside the URL path alphabet (`?`, `#`, `\\`, `{`, \
                 space, …); give the query as pairs",
            );
        }
        i += 1;
    }
    if path.contains("//") {
        return refuse("the path holds an empty segment (`//`)");
    }
    for segment in path[1..].split('/') {
        if matches!(decode(segment).as_deref(), Some(".") | Some("..")) {
            return refuse("the path holds a `.` or `..` segment");
        }
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
        Rules::new(
            vec![
                ("/api/orders".into(), "orders".into()),
                ("/api/orders/archive".into(), "archive".into()),
            ],
            vec![("tenant".into(), "tenant".into())],
        )
        .unwrap()
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
        assert_eq!(r.admit("/api/orders", &[], &d).unwrap().dataset, "orders");
        assert_eq!(
            r.admit("/api/orders/17", &[], &d).unwrap().dataset,
            "orders"
        );
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
        assert!(
            other.0.contains("`tenant` = `globex` is outside"),
            "{other}"
        );
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

    fn org_rules() -> Rules {
        Rules::new(
            vec![
                ("/v2/orgs/{org}/tickets".into(), "tickets".into()),
                ("/v2/status".into(), "status".into()),
            ],
            Vec::new(),
        )
        .unwrap()
    }

    fn org_governed(filter: RowFilter) -> Vec<GovernedTable> {
        vec![GovernedTable {
            schema: String::new(),
            name: "tickets".into(),
            filter,
            columns: None,
        }]
    }

    fn orgs(values: &[&str]) -> RowFilter {
        RowFilter::AnyOf(vec![vec![Predicate {
            column: "org".into(),
            op: Op::In,
            values: values.iter().map(|v| Value::Text((*v).into())).collect(),
        }]])
    }

    #[test]
    fn a_path_segment_binds_its_column_like_a_query_parameter() {
        let r = org_rules();
        let acme = org_governed(orgs(&["acme"]));
        let ok = r.admit("/v2/orgs/acme/tickets", &[], &acme).unwrap();
        assert_eq!(ok.template, "/v2/orgs/{org}/tickets");
        assert_eq!(ok.bound, [("org".to_owned(), "acme".to_owned())]);
        assert!(
            r.admit("/v2/orgs/acme/tickets/17/comments", &[], &acme)
                .is_ok()
        );
        // Another tenant in the path is refused before anything is sent,
        // escaped or not.
        for other in [
            "/v2/orgs/globex/tickets",
            "/v2/orgs/%67lobex/tickets",
            "/v2/orgs/ACME/tickets",
        ] {
            let err = r.admit(other, &[], &acme).unwrap_err();
            assert!(
                err.0.contains("outside the embed user's row filter"),
                "{other}: {err}"
            );
        }
        // Any of the pinned values, one per request.
        let both = org_governed(orgs(&["acme", "initech"]));
        assert!(r.admit("/v2/orgs/initech/tickets", &[], &both).is_ok());
        // A filter on a column the request cannot carry: deny by default.
        let by_region = org_governed(RowFilter::AnyOf(vec![vec![
            Predicate {
                column: "org".into(),
                op: Op::Eq,
                values: vec![Value::Text("acme".into())],
            },
            Predicate {
                column: "region".into(),
                op: Op::Eq,
                values: vec![Value::Text("eu".into())],
            },
        ]]));
        let err = r
            .admit("/v2/orgs/acme/tickets", &[], &by_region)
            .unwrap_err();
        assert!(
            err.0
                .contains("reads `region`, which this request does not carry"),
            "{err}"
        );
        // A branch that does not pin the column cannot be bound at all.
        let mixed = org_governed(RowFilter::AnyOf(vec![
            vec![Predicate {
                column: "org".into(),
                op: Op::Eq,
                values: vec![Value::Text("acme".into())],
            }],
            vec![Predicate {
                column: "priority".into(),
                op: Op::Gt,
                values: vec![Value::Int(3)],
            }],
        ]));
        let err = r.admit("/v2/orgs/acme/tickets", &[], &mixed).unwrap_err();
        assert!(err.0.contains("does not pin"), "{err}");
        // Everyone's rows: nothing to bind.
        assert!(
            r.admit(
                "/v2/orgs/globex/tickets",
                &[],
                &org_governed(RowFilter::AllRows)
            )
            .is_ok()
        );
    }

    #[test]
    fn paths_servers_read_differently_are_refused() {
        let r = org_rules();
        let acme = org_governed(orgs(&["acme"]));
        for bad in [
            "/v2/orgs/acme/tickets/..;/..;/admin",
            "/v2/orgs/acme;x=1/tickets",
            "/v2/orgs/acme/tickets/%2e%2e/admin",
            "/v2/orgs/acme/tickets/.%2E/admin",
            "/v2/orgs/acme/tickets/%252e%252e/admin",
            "/v2/orgs/acme/tickets/%5c..%5cadmin",
            "/v2/orgs/acme/tickets/%c0%ae%c0%ae/admin",
            "/v2/orgs/acme/tickets/%3Badmin",
            "/v2/orgs/acme/tickets/%3F",
            "/v2/orgs/acme/tickets/a%00b",
            "/v2/orgs/acme/tickets/\u{e9}",
        ] {
            let err = r.admit(bad, &[], &acme).unwrap_err();
            assert!(!err.0.is_empty(), "{bad} was admitted");
        }
        // A value with a space or a dot, escaped, is fine.
        let spaced = org_governed(orgs(&["acme corp.io"]));
        assert!(
            r.admit("/v2/orgs/acme%20corp%2Eio/tickets", &[], &spaced)
                .is_ok()
        );
    }

    #[test]
    fn templates_are_checked_and_unbindable_paths_flagged() {
        for bad in [
            "/v2/orgs/x{org}/tickets",
            "/v2/{or g}/x",
            "/v2/{}/x",
            "v2/{org}",
            "/v2/a;b",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let err = Template::parse("/v2/orgs/x{org}").unwrap_err();
        assert!(err.0.contains("whole path segment"), "{err}");
        let flagged = org_rules().unbindable();
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert!(flagged[0].contains("/v2/status"), "{flagged:?}");
        assert!(
            rules().unbindable().is_empty(),
            "bind_params bind every path"
        );
    }
}
