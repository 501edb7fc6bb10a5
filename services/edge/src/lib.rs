//! keymesh edge: the HTTP(S) front door of the product, holding no key
//! material and no business rules — it translates. It speaks two dialects
//! on one listener: the AWS XKS proxy API ([`xks`]: SigV4 per key store and
//! the secondary-authorization policy from `keymesh-xks-auth`, the XKS wire
//! table, calls to the workers' `CryptoWorker`) for AWS KMS, and the
//! Huawei-Cloud-compatible KMS and CSMS APIs ([`huawei`]: SDK-HMAC or
//! `X-Auth-Token`, typed requests, one call into the domain layer
//! `keymesh-kms-core` — which owns key, secret, grant, alias, tag and
//! account rules over `keymesh-store` and reaches the workers' `KeyVault`
//! through `keymesh-keyvault-client` — and the KMS/CSMS wire table). [`app`]
//! routes a request to its dialect; each dialect is one explicit pipeline
//! (route → deadline → body limit → authenticate → tenant → rate limit →
//! handler) ending in the shared rescue step ([`http`], over
//! `keymesh-http-server`: listener, TLS, bounded body, abuse budgets,
//! probes). [`mesh`] builds the crypto-worker pool (`keymesh-worker-pool`:
//! discovery, health, balancing, shedding, one retry); quota checks go
//! through the leased client `keymesh-limiter-client`. XKS key stores are the
//! hot-reloaded file [`keystores`] loads (`keymesh-contracts`); [`config`] is
//! the typed, validated configuration; [`state`] holds what every request
//! shares and [`tasks`] the background tasks, which [`serve`] stops when it
//! returns.

pub mod app;
pub mod config;
pub mod http;
pub mod huawei;
pub mod keystores;
pub mod mesh;
pub mod state;
pub mod tasks;
pub mod xks;

use std::future::Future;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::AppState;

/// The pre-bound listeners [`serve_with`] answers on.
#[derive(Debug)]
pub struct Listeners {
    /// Both dialects and the probes (and `/metrics` without an admin one).
    pub main: TcpListener,
    /// `admin_listen`: probes and `/metrics` only, in plain HTTP.
    pub admin: Option<TcpListener>,
}

/// Serve the edge on `listener` until `shutdown` resolves, then drain and
/// stop every background task. No admin listener and no metrics handle:
/// what a test embedding the edge needs.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let listeners = Listeners {
        main: listener,
        admin: None,
    };
    serve_with(config, listeners, None, shutdown).await
}

/// [`serve`] with the optional admin listener and the process's metrics
/// handle (the recorder is process-wide, so `main` installs it).
pub async fn serve_with(
    config: Config,
    listeners: Listeners,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let tls = config
        .tls
        .as_ref()
        .map(|t| http::tls::server_config(&t.files()))
        .transpose()?;
    tracing::info!(
        addr = %listeners.main.local_addr()?,
        tls = tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
        workers = config.workers.len(),
        "edge listening"
    );
    let huawei_config = config.huawei.clone();
    let state = AppState::start(config, metrics)?;
    // Whatever happens below, no background task outlives this call.
    let _stop = StopOnDrop(Arc::clone(&state));
    let huawei = match huawei_config {
        Some(h) => {
            let h = huawei::Huawei::open(Arc::clone(&state), h).await?;
            state.tasks.own(huawei::purge::spawn(Arc::clone(&h)));
            tracing::info!("huawei KMS dialect enabled");
            Some(h)
        }
        None => None,
    };
    let limits = state.config.abuse;
    // The admin listener stops only after the main one has drained, so
    // probes keep answering and the last scrape sees the final counts.
    let (drained, admin_stop) = tokio::sync::oneshot::channel::<()>();
    let admin = match listeners.admin {
        Some(admin) => {
            tracing::info!(addr = %admin.local_addr()?, "admin listener (probes, metrics)");
            let admin_app = app::admin(Arc::clone(&state));
            Some(tokio::spawn(http::server::serve(
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
    let served = http::server::serve(
        app::app(Arc::clone(&state), huawei),
        listeners.main,
        tls,
        limits,
        shutdown,
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

/// Stops the state's background tasks when [`serve_with`] returns, early
/// errors included.
struct StopOnDrop(Arc<AppState>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests;
