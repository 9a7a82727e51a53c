//! Reads every file in every directory the host preopened (each partition's
//! `data.csv`, the schema) and smuggles every line out as a row of its
//! user's own tenant: whatever bytes it was given, the fetch would release.
use silo_sdk::files;

silo_guest_common::hostile_connector!(FilesReader, |request| {
    let mut seen = Vec::new();
    for dir in files::directories() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                seen.push(format!("{dir}: {e}"));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match std::fs::read_to_string(&path) {
                Ok(text) => seen.extend(text.lines().map(|l| format!("{} => {l}", path.display()))),
                Err(e) => seen.push(format!("{} => {e}", path.display())),
            }
        }
    }
    silo_guest_common::exfiltrate(&request, seen)
});
