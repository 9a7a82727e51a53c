//! Misuses the HTTP capability, by dataset:
//! - `escape`: paths outside the allow-list (other hosts, `..`, encoded
//!   separators, other prefixes) and requests without or beyond the tenant
//!   the host binds. Every attempt must be refused; any success fails loudly.
//! - `token`: gathers everything the sandbox can see (settings, environment,
//!   files, a real answer) and reports it, so the test can look for the token.
//! - `big`, `slow`, `redirect`: one request each, whose error is returned as is.
use silo_sdk::{Error, http};

const ESCAPES: &[(&str, &[(&str, &str)])] = &[
    ("/admin/secrets", &[]),
    ("http://127.0.0.1:9/api/orders", &[("tenant", "acme")]),
    ("//127.0.0.1:9/api/orders", &[("tenant", "acme")]),
    ("/api/orders/../../admin/secrets", &[("tenant", "acme")]),
    (
        "/api/orders/%2e%2e/%2e%2e/admin/secrets",
        &[("tenant", "acme")],
    ),
    ("/api/orders%2F..%2F..%2Fadmin", &[("tenant", "acme")]),
    ("/api/orders?tenant=globex", &[("tenant", "acme")]),
    ("/api/ordersx", &[("tenant", "acme")]),
    ("/api/orders", &[]),
    ("/api/orders", &[("tenant", "globex")]),
    ("/api/orders", &[("tenant", "acme"), ("tenant", "globex")]),
];

fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
    query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

silo_guest_common::hostile_connector!(HttpEscape, |request| {
    match request.dataset.as_str() {
        "escape" => {
            let mut refusals = Vec::new();
            for (path, query) in ESCAPES {
                match http::get(path, &pairs(query)) {
                    Ok(r) => {
                        return Err(Error::Connector(format!(
                            "ACCEPTED: {path} {query:?} answered {}",
                            r.status
                        )));
                    }
                    Err(e) => refusals.push(format!("{path} {query:?} => {e:?}")),
                }
            }
            Err(Error::Denied(refusals.join("\n")))
        }
        "token" => {
            let mut seen = vec![format!("settings: {}", http::settings())];
            seen.extend(std::env::vars().map(|(k, v)| format!("env {k}={v}")));
            seen.extend(std::env::args().map(|a| format!("arg {a}")));
            for dir in ["/", "/data", "/schema", "."] {
                if let Ok(entries) = std::fs::read_dir(dir) {
                    seen.extend(entries.flatten().map(|e| format!("file {:?}", e.path())));
                }
            }
            match http::get("/api/orders", &pairs(&[("tenant", "acme")])) {
                Ok(r) => {
                    seen.push(format!("content-type: {:?}", r.content_type));
                    seen.push(format!("body: {}", String::from_utf8_lossy(&r.body)));
                }
                Err(e) => seen.push(format!("get failed: {e:?}")),
            }
            Err(Error::Connector(format!("SEEN\n{}", seen.join("\n"))))
        }
        "big" => http::get("/api/big", &[]).map(|r| {
            Err(Error::Connector(format!(
                "ACCEPTED: {} bytes",
                r.body.len()
            )))
        })?,
        "slow" => http::get("/api/slow", &[]).map(|r| {
            Err(Error::Connector(format!(
                "ACCEPTED: slow answered {}",
                r.status
            )))
        })?,
        "redirect" => http::get("/api/redirect", &[]).map(|r| {
            Err(Error::Connector(format!(
                "ACCEPTED: redirect answered {}",
                r.status
            )))
        })?,
        other => Err(Error::NotFound(other.to_owned())),
    }
});
