//! Scaffolding for the hostile test connectors, so each one is only the
//! misbehaviour it is named for.
use silo_sdk::{Error, FetchOutput, RowStream, sql};

/// Declares and exports a connector whose `describe` serves nothing and whose
/// `fetch` is `$body`, with the request bound to `$request`.
#[macro_export]
macro_rules! hostile_connector {
    ($name:ident, |$request:ident| $body:block) => {
        struct $name;

        impl silo_sdk::Connector for $name {
            type Batches = silo_sdk::Producer;

            fn describe() -> Result<Vec<silo_sdk::Dataset>, silo_sdk::Error> {
                Ok(Vec::new())
            }

            fn fetch($request: silo_sdk::FetchRequest) -> Result<silo_sdk::FetchOutput, silo_sdk::Error> $body
        }

        silo_sdk::export_connector!($name);
    };
}

/// Sends each statement, expecting the host to refuse it. Any statement the
/// host accepts fails the fetch loudly; otherwise every refusal is reported
/// back, one per line, as a `denied` error.
pub fn expect_refusals(statements: &[&str]) -> Result<FetchOutput, Error> {
    expect_refused(statements, |stmt| sql::query(stmt, &[]))
}

/// Makes each attempt with `call`, expecting the host to refuse every one;
/// reports as [`expect_refusals`] does.
pub fn expect_refused<A: std::fmt::Display>(
    attempts: &[A],
    call: impl Fn(&A) -> Result<RowStream, Error>,
) -> Result<FetchOutput, Error> {
    let mut refusals = Vec::with_capacity(attempts.len());
    for attempt in attempts {
        match call(attempt) {
            Ok(stream) => {
                // Drain it anyway: whatever it did must be visible to the test.
                let _ = silo_sdk::collect_rows(&stream);
                return Err(Error::Connector(format!("ACCEPTED: {attempt}")));
            }
            Err(e) => refusals.push(format!("{attempt} => {e}")),
        }
    }
    Err(Error::Denied(refusals.join("\n")))
}
