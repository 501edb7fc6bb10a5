//! crypto-worker binary: telemetry → config → bind → serve → drain.
//! All logic lives in the library so tests can run it in-process.

use clap::Parser as _;
use keymesh_crypto_worker::{Args, serve};

// mimalloc: glibc malloc showed up as ~15% of CPU per request under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _telemetry = match keymesh_common::telemetry::init("crypto-worker") {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("crypto-worker: cannot set up telemetry: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "crypto-worker failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Args::parse().into_config()?;
    let listener = keymesh_common::net::bind(config.listen, config.addr_file.as_deref()).await?;
    serve(config, listener, keymesh_common::shutdown::signal()).await
}
