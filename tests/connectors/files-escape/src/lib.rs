//! Tries every way out of its preopened partitions: another tenant's
//! partition, `..`, absolute host paths, a symlink planted in its own
//! partition, the dataset directory itself, and writing. Every attempt must
//! fail; any success is reported as `ACCEPTED`.
use silo_sdk::Error;

const READS: &[&str] = &[
    "/data/globex/data.csv",
    "/data/acme/../globex/data.csv",
    "/data/acme/../../orders/globex/data.csv",
    "/etc/passwd",
    "/data/acme/leak.csv",
    "/data/acme/../../../../etc/passwd",
];

silo_guest_common::hostile_connector!(FilesEscape, |_request| {
    let mut refusals = Vec::new();
    for path in READS {
        match std::fs::read(path) {
            Ok(bytes) => {
                return Err(Error::Connector(format!(
                    "ACCEPTED read {path}: {} bytes",
                    bytes.len()
                )));
            }
            Err(e) => refusals.push(format!("read {path} => {e}")),
        }
    }
    for dir in ["/data", "/", "/data/acme/.."] {
        match std::fs::read_dir(dir) {
            Ok(_) => return Err(Error::Connector(format!("ACCEPTED list {dir}"))),
            Err(e) => refusals.push(format!("list {dir} => {e}")),
        }
    }
    for path in ["/data/acme/data.csv", "/data/acme/new.csv"] {
        match std::fs::write(path, b"tenant\nglobex\n") {
            Ok(()) => return Err(Error::Connector(format!("ACCEPTED write {path}"))),
            Err(e) => refusals.push(format!("write {path} => {e}")),
        }
    }
    match std::fs::remove_file("/data/acme/data.csv") {
        Ok(()) => return Err(Error::Connector("ACCEPTED delete".into())),
        Err(e) => refusals.push(format!("delete /data/acme/data.csv => {e}")),
    }
    Err(Error::Denied(refusals.join("\n")))
});
