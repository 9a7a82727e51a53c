//! Builds every test connector (and the real ones) once, and generates a
//! constant with each component's path, named for what the connector does.
#[path = "../host/guest_build.rs"]
mod guest_build;

use std::fmt::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut names: Vec<String> = std::fs::read_dir(root.join("connectors"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let packages: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            (
                format!("test-connector-{n}"),
                format!("tests/connectors/{n}"),
            )
        })
        .chain(
            ["postgres", "mysql", "mongodb", "files", "http-json"]
                .map(|c| (format!("silo-connector-{c}"), format!("connectors/{c}"))),
        )
        .collect();
    let refs: Vec<(&str, &str)> = packages
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("guest-common").display()
    );
    let paths = guest_build::build(&refs)?;
    let mut code = String::new();
    for ((package, _), path) in packages.iter().zip(&paths) {
        let name = package
            .trim_start_matches("test-connector-")
            .trim_start_matches("silo-connector-");
        let konst = name.to_uppercase().replace('-', "_");
        writeln!(
            code,
            "/// The `{package}` component.\npub const {konst}: &str = {:?};",
            path.display().to_string()
        )?;
    }
    std::fs::write(
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("connectors.rs"),
        code,
    )?;
    Ok(())
}
