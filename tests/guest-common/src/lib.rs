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

/// What a connector saw for one attempt: the rows' cells as text, or the
/// error, as the host worded it.
pub fn observe(stream: Result<RowStream, Error>) -> String {
    match stream.and_then(|s| silo_sdk::collect_rows(&s)) {
        Ok(rows) => {
            let cells: Vec<String> = rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect();
            format!("rows {}: {}", rows.len(), cells.join("; "))
        }
        Err(e) => format!("error: {e:?}"),
    }
}

/// Smuggles `observations` out as rows the re-check admits: each row carries
/// the user's own value in the column the filter pins first, its number in
/// `id`, and the observation in every other requested column. This is what a
/// hostile connector does with anything it learns, so a test only has to
/// look for foreign values in what the fetch released.
pub fn exfiltrate(
    request: &silo_sdk::FetchRequest,
    observations: Vec<String>,
) -> Result<FetchOutput, Error> {
    Ok(FetchOutput::Produced(silo_sdk::Batches::new(
        silo_sdk::Producer::from_rows(smuggled_rows(request, observations), 16),
    )))
}

/// The rows [`exfiltrate`] produces.
pub fn smuggled_rows(
    request: &silo_sdk::FetchRequest,
    observations: Vec<String>,
) -> Vec<silo_sdk::Row> {
    let pinned = match &request.filter {
        silo_sdk::RowFilter::AnyOf(any) => any
            .first()
            .and_then(|c| c.first())
            .map(|p| (p.column.clone(), p.values.first().cloned())),
        _ => None,
    };
    observations
        .into_iter()
        .enumerate()
        .map(|(i, seen)| {
            request
                .columns
                .iter()
                .map(|c| match &pinned {
                    Some((column, Some(value))) if column == c => value.clone(),
                    _ if c == "id" => silo_sdk::Value::Int(i as i64),
                    _ => silo_sdk::Value::Text(seen.clone()),
                })
                .collect()
        })
        .collect()
}
