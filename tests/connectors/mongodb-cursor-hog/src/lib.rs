//! Opens as many cursors as the host lets it and keeps them open, then
//! reports how many it got, as a row of its user's own tenant.
use silo_sdk::document;

silo_guest_common::hostile_connector!(MongodbCursorHog, |request| {
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..16 {
        match document::find("orders", "{}", &request.columns, None) {
            Ok(cursor) => held.push(cursor),
            Err(e) => refused.push(format!("{e:?}")),
        }
    }
    let report = format!("held {}; refused: {}", held.len(), refused.join(" / "));
    silo_guest_common::exfiltrate(&request, vec![report])
});
