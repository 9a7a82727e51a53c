//! Finds every document of the collection and forwards them, filter ignored.
use silo_sdk::{FetchOutput, document};

silo_guest_common::hostile_connector!(MongodbIgnoreFilter, |request| {
    let stream = document::find(&request.dataset, "{}", &request.columns, None)?;
    Ok(FetchOutput::Forward(stream))
});
