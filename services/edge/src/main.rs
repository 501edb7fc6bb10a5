//! edge: telemetry → config → state → bind → serve → drain.

use std::path::PathBuf;

use clap::Parser;
use keymesh_edge::http::{server, tls};
use keymesh_edge::{app, config::Config, state::AppState};

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
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let listener = keymesh_common::net::bind(config.listen, config.addr_file.as_deref()).await?;
    let admin = match config.admin_listen {
        Some(addr) => Some(keymesh_common::net::bind(addr, None).await?),
        None => None,
    };
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
        workers = config.workers.len(),
        "edge listening"
    );
    let huawei_config = config.huawei.clone();
    let state = AppState::start(config, Some(metrics))?;
    let huawei = match huawei_config {
        Some(h) => {
            let h = keymesh_edge::huawei::Huawei::open(std::sync::Arc::clone(&state), h).await?;
            keymesh_edge::huawei::purge::spawn(std::sync::Arc::clone(&h));
            tracing::info!("huawei KMS dialect enabled");
            Some(h)
        }
        None => None,
    };
    // The admin listener stops only after the main one has drained, so
    // probes keep answering and the last scrape sees the final counts.
    let (drained, admin_stop) = tokio::sync::oneshot::channel::<()>();
    let admin = match admin {
        Some(admin) => {
            tracing::info!(addr = %admin.local_addr()?, "admin listener (probes, metrics)");
            let admin_app = keymesh_edge::http::probes::admin(std::sync::Arc::clone(&state));
            let limits = state.config.abuse;
            Some(tokio::spawn(server::serve(
                admin_app,
                admin,
                None,
                limits,
                async {
                    let _ = admin_stop.await;
                },
            )))
        }
        None => None,
    };
    let limits = state.config.abuse;
    let served = server::serve(
        app::app(state, huawei),
        listener,
        tls,
        limits,
        keymesh_common::shutdown::signal(),
    )
    .await;
    let _ = drained.send(());
    if let Some(admin) = admin {
        admin.await??;
    }
    served?;
    tracing::info!("edge stopped");
    Ok(())
}
