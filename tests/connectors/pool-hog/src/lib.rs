//! Opens as many statements as the host lets it and keeps them open, then
//! produces a row at a time forever, so the fetch, and every connection it
//! holds, would never end unless the host ends it.
use silo_sdk::{Batches, FetchOutput, Producer, sql};

silo_guest_common::hostile_connector!(PoolHog, |request| {
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..16 {
        match sql::query("SELECT id FROM orders", &[]) {
            Ok(stream) => held.push(stream),
            Err(e) => {
                let text = format!("{e:?}");
                // A full pool makes each try wait: one is enough to know.
                let busy = text.contains("busy");
                refused.push(text);
                if busy {
                    break;
                }
            }
        }
    }
    let report = format!("held {}; refused: {}", held.len(), refused.join(" / "));
    let mut first = Some(silo_guest_common::smuggled_rows(&request, vec![report]));
    let mut tick = 0;
    Ok(FetchOutput::Produced(Batches::new(Producer::new(
        move || {
            let _open = &held;
            if let Some(rows) = first.take() {
                return Ok(Some(rows));
            }
            tick += 1;
            let rows = silo_guest_common::smuggled_rows(&request, vec![format!("tick {tick}")]);
            Ok(Some(rows))
        },
    ))))
});
