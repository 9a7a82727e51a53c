//! Compiles the built-in connectors so the `silo` binary carries them.
#[path = "../guest_build.rs"]
mod guest_build;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for wasm in guest_build::build(&[
        ("silo-connector-postgres", "connectors/postgres"),
        ("silo-connector-mysql", "connectors/mysql"),
        ("silo-connector-mongodb", "connectors/mongodb"),
        ("silo-connector-files", "connectors/files"),
        ("silo-connector-http-json", "connectors/http-json"),
    ])? {
        let name = wasm.file_name().ok_or("no file name")?;
        std::fs::copy(&wasm, out.join(name))?;
    }
    Ok(())
}
