//! keymesh rate-limiter: telemetry → config → bind → serve → drain.

use clap::Parser;
use keymesh_rate_limiter::{Args, Config, serve};

// mimalloc: glibc malloc showed up as ~15% of CPU per request under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = keymesh_common::telemetry::init("keymesh-rate-limiter")?;
    let args = Args::parse();
    let mut config = Config::load(args.config.as_deref())?;
    config.grpc_tls = args.grpc_tls()?;
    config.health_listen = args.health_listen;
    if let Some(addr) = args.metrics_listen {
        // Process-wide recorder, so here rather than in the embeddable library.
        keymesh_common::prometheus::install_and_serve(addr).await?;
    }
    let listener = keymesh_common::net::bind(args.listen, args.addr_file.as_deref()).await?;
    serve(config, listener, keymesh_common::shutdown::signal()).await
}
