//! Builds this workspace's guest crates for `wasm32-wasip2` with a nested
//! cargo, into a target directory of their own (so the outer build's lock is
//! never contended). Shared by the build scripts of `silo-engine` (built-in
//! connectors) and `silo-tests` (test connectors).
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";

/// Builds `packages` (name, directory relative to the workspace root) and
/// returns each package's `.wasm` path.
pub fn build(packages: &[(&str, &str)]) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // The workspace root: the nearest ancestor holding the WIT and the lock.
    let root = manifest_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file() && d.join("wit").is_dir())
        .ok_or("no workspace root (with Cargo.lock and wit/) above the crate")?
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>/out.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .ok_or("unexpected OUT_DIR layout")?
        .join("guest");

    for dir in ["wit", "sdk", "Cargo.lock"]
        .iter()
        .chain(packages.iter().map(|(_, d)| d))
    {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for (name, _) in packages {
        cmd.arg("-p").arg(name);
    }
    // Guests are small and shipped: no debug info, stripped.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true");
    // Flags and wrappers meant for the outer (host) build must not leak in.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!(
            "building the {TARGET} guests failed ({status}); is the target installed? `rustup target add {TARGET}`"
        )
        .into());
    }
    Ok(packages
        .iter()
        .map(|(name, _)| wasm_path(&target_dir, name))
        .collect())
}

fn wasm_path(target_dir: &Path, package: &str) -> PathBuf {
    target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}
