//! Fetching for one tenant of an API that puts the tenant in the path
//! (`/v2/orgs/{org}/tickets`) under one company-wide key, asks for another
//! tenant's path: plainly, escaped, in another case, through `..`, `..;`,
//! matrix parameters and encoded separators, and paths that bind nothing.
//! Every request must be refused before it is sent; one that is answered is
//! reported as `ACCEPTED`.
use silo_sdk::{Error, http};

const PATHS: &[&str] = &[
    "/v2/orgs/globex/tickets",
    "/v2/orgs/%67lobex/tickets",
    "/v2/orgs/GLOBEX/tickets",
    "/v2/orgs/acme/../globex/tickets",
    "/v2/orgs/acme/..;/globex/tickets",
    "/v2/orgs/acme;org=globex/tickets",
    "/v2/orgs/acme%2F..%2Fglobex/tickets",
    "/v2/orgs/acme/tickets/%2e%2e/%2e%2e/globex/tickets",
    "/v2/orgs/acme/tickets/%252e%252e/globex",
    "/v2/orgs/acme%00/tickets",
    "/v2/orgs",
    "/v2/status",
];

silo_guest_common::hostile_connector!(HttpPathTenant, |_request| {
    let mut refusals = Vec::new();
    for path in PATHS {
        match http::get(path, &[]) {
            Ok(answer) => {
                return Err(Error::Connector(format!(
                    "ACCEPTED {path}: {} ({} bytes)",
                    answer.status,
                    answer.body.len()
                )));
            }
            Err(e) => refusals.push(format!("{path} => {e:?}")),
        }
    }
    Err(Error::Denied(refusals.join("\n")))
});
