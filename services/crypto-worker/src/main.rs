//! crypto-worker binary: telemetry → config → bind → serve → drain.
//! All logic lives in the library so tests can run it in-process.

use std::net::SocketAddr;

use clap::Parser as _;
use keymesh_crypto_worker::{Args, serve};

// mimalloc: glibc malloc showed up as ~15% of CPU per request under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The worker's flags plus the process-level ones that the library (which
/// tests embed, several per process) must not own: the metrics recorder is
/// process-wide.
#[derive(Debug, clap::Parser)]
#[command(
    name = "crypto-worker",
    about = "keymesh crypto-worker: AES-256-GCM over a PKCS#11 session pool"
)]
struct Cli {
    #[command(flatten)]
    args: Args,
    /// Serve Prometheus metrics at GET /metrics on this address (default: off).
    #[arg(long, env = "KEYMESH_WORKER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

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
    let cli = Cli::parse();
    let config = cli.args.into_config()?;
    if let Some(addr) = cli.metrics_listen {
        keymesh_common::prometheus::install_and_serve(addr).await?;
    }
    let listener = keymesh_common::net::bind(config.listen, config.addr_file.as_deref()).await?;
    serve(config, listener, keymesh_common::shutdown::signal()).await
}
