//! edge: telemetry → config → state → bind → serve → drain.

use std::path::PathBuf;

use clap::Parser;
use keymesh_edge::{config::Config, server, state::AppState, tls};

#[derive(Debug, Parser)]
#[command(version, about = "keymesh edge: the AWS XKS proxy front door")]
struct Args {
    /// Edge configuration file (TOML); see deploy/edge.toml.
    #[arg(long, env = "KEYMESH_EDGE_CONFIG", default_value = "edge.toml")]
    config: PathBuf,
}

// mimalloc: glibc malloc showed up as ~15% of CPU per request under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = keymesh_common::telemetry::init("keymesh-edge")?;
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "configuration rejected");
            return Err(e);
        }
    };
    let metrics = keymesh_common::prometheus::install()?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let listener = keymesh_common::net::bind(config.listen, config.addr_file.as_deref()).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
        workers = config.workers.len(),
        "edge listening"
    );
    let state = AppState::start(config, Some(metrics))?;
    server::serve(state, listener, tls, keymesh_common::shutdown::signal()).await?;
    tracing::info!("edge stopped");
    Ok(())
}
