//! edge: telemetry → config → bind → serve → drain. Everything else lives in
//! the library ([`keymesh_edge::serve_with`]) so tests can run it in-process.

use std::path::PathBuf;

use clap::Parser;
use keymesh_edge::{Listeners, config::Config};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "keymesh edge: the AWS XKS proxy and Huawei-compatible KMS front door"
)]
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
    let main = keymesh_common::net::bind(config.listen, config.addr_file.as_deref()).await?;
    let admin = match config.admin_listen {
        Some(addr) => Some(keymesh_common::net::bind(addr, None).await?),
        None => None,
    };
    let listeners = Listeners { main, admin };
    let shutdown = keymesh_common::shutdown::signal();
    keymesh_edge::serve_with(config, listeners, Some(metrics), shutdown).await
}
