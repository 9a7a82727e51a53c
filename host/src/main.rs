//! The `silo` binary: a thin shell over `silo_host::cli`.
use clap::Parser;

/// Fetches allocate a few small values per cell; mimalloc keeps that cheap
/// on every thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SILO_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match silo_host::cli::run(silo_host::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
