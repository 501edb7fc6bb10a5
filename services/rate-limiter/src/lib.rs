//! keymesh rate-limiter: governor token buckets keyed by (tenant, operation).
//!
//! Callers (the edge) lease permits in batches over
//! `keymesh.ratelimit.v1.RateLimiter/Acquire` so most requests never pay a
//! round trip here. The same buckets also answer Envoy's
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` ([`envoy`]),
//! so an Envoy/Istio ingress enforces the same quotas. Several replicas can
//! run side by side with one quota file: they share nothing, because the
//! edge routes every bucket key to one replica (rendezvous hashing). Quotas come from a TOML file (default, per tenant, per
//! operation) that is validated as a whole and hot-reloaded; a reload rebuilds
//! only the buckets whose limit changed. The server speaks `grpc.health.v1`,
//! serves from a TCP_NODELAY listener, and on shutdown reports NOT_SERVING
//! before draining in-flight RPCs.

pub mod buckets;
pub mod envoy;
pub mod quota;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use keymesh_common::grpc_tls::{GrpcTls, GrpcTlsArgs, MeshTls, tls_incoming};
use keymesh_common::net::nodelay_incoming;
use keymesh_common::propagation::GrpcTraceLayer;
use keymesh_common::reload::Reloadable;
use keymesh_proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use keymesh_proto::ratelimit::v1::rate_limiter_server::RateLimiterServer;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

pub use buckets::{Buckets, Grant};
pub use envoy::EnvoyService;
pub use quota::{Limit, Quotas};
pub use service::{LEASE_TTL_MS, LimiterService, MAX_PERMITS};

/// How often the quota file's mtime/size is checked (SIGHUP forces a reload).
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Command line; every flag also reads its environment variable.
#[derive(Debug, clap::Parser)]
#[command(
    name = "rate-limiter",
    about = "keymesh rate-limiter (gRPC quota leases)"
)]
pub struct Args {
    /// gRPC listen address (default 127.0.0.1:7200).
    #[arg(long, env = "KEYMESH_LIMITER_LISTEN", default_value = "127.0.0.1:7200")]
    pub listen: SocketAddr,
    /// Write the bound address here once listening (default: none).
    #[arg(long, env = "KEYMESH_LIMITER_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// TOML quota file, hot-reloaded (default: built-in 20000/s, burst 40000).
    #[arg(long, env = "KEYMESH_LIMITER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics at GET /metrics on this address (default: off).
    #[arg(long, env = "KEYMESH_LIMITER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub grpc_tls: GrpcTlsArgs,
    /// Also serve only grpc.health.v1, in plaintext, on this address, for
    /// kubelet probes that cannot present a mesh certificate (default: none).
    #[arg(long, env = "KEYMESH_LIMITER_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

impl Args {
    /// The mesh TLS (`--grpc-tls-*`, `--grpc-allowed-peers`); `None` only
    /// with `--insecure-plaintext-grpc`, an error without either.
    pub fn grpc_tls(&self) -> anyhow::Result<Option<MeshTls>> {
        self.grpc_tls
            .clone()
            .mesh_tls()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
    }
}

/// Validated runtime configuration.
#[derive(Debug)]
pub struct Config {
    /// The quota file, kept fresh by a background watcher while serving.
    pub quotas: Arc<Reloadable<Quotas>>,
    /// Quota file poll interval (default 1 s).
    pub reload_interval: Duration,
    /// `--grpc-tls-*`: serve over mTLS. `None` (plaintext) only with
    /// `--insecure-plaintext-grpc`, and the default of the library
    /// constructors below, which tests embed.
    pub grpc_tls: Option<MeshTls>,
    /// `--health-listen` (default `None`).
    pub health_listen: Option<SocketAddr>,
}

impl Config {
    /// Load the quota file (fatal if it is missing or invalid: the service
    /// must not start with quotas nobody wrote), or use the built-in default.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let quotas = match path {
            Some(p) => Reloadable::load(p, Quotas::from_toml)?,
            None => Reloadable::fixed(Quotas::default()),
        };
        Ok(Self {
            quotas,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            grpc_tls: None,
            health_listen: None,
        })
    }

    /// Fixed quotas that never reload (tests, embedding).
    pub fn fixed(quotas: Quotas) -> Self {
        Self {
            quotas: Reloadable::fixed(quotas),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            grpc_tls: None,
            health_listen: None,
        }
    }
}

/// Aborts the quota watcher however `serve` ends (including being dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serve on `listener` until `shutdown` resolves, then report NOT_SERVING and
/// drain in-flight RPCs. The background tasks (quota and certificate
/// watches, the health-only listener) belong to this call: they stop when it
/// returns, or when its future is dropped.
pub async fn serve<F>(config: Config, listener: TcpListener, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with_clock(config, DefaultClock::default(), listener, shutdown).await
}

/// [`serve`] with an explicit governor clock (tests pass a fake one).
pub async fn serve_with_clock<C, F>(
    config: Config,
    clock: C,
    listener: TcpListener,
    shutdown: F,
) -> anyhow::Result<()>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
    F: Future<Output = ()> + Send + 'static,
{
    let _watch = AbortOnDrop(config.quotas.spawn_watch(config.reload_interval));
    // Loaded before serving: a limiter configured for mTLS must not start
    // without its certificates (or fall back to plaintext).
    let grpc_tls = config.grpc_tls.clone().map(GrpcTls::load).transpose()?;
    let _tls_watch = grpc_tls
        .as_ref()
        .map(|t| AbortOnDrop(t.spawn_watch(keymesh_common::grpc_tls::RELOAD_INTERVAL)));
    let buckets = Arc::new(Buckets::new(Arc::clone(&config.quotas), clock));
    let limiter = RateLimiterServer::new(LimiterService::new(Arc::clone(&buckets)));
    let envoy = RateLimitServiceServer::new(EnvoyService::new(buckets));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RateLimiterServer<LimiterService<C>>>()
        .await;
    health
        .set_serving::<RateLimitServiceServer<EnvoyService<C>>>()
        .await;

    if grpc_tls.is_none() {
        keymesh_common::grpc_tls::warn_insecure_plaintext("rate-limiter");
    }
    // Probes only: the same health reporter, no Acquire / ShouldRateLimit.
    let health_only =
        keymesh_common::health_listener::start(config.health_listen, health_service.clone())
            .await?;

    let addr = listener.local_addr()?;
    let signal = async move {
        shutdown.await;
        // NOT_SERVING first so health-checking balancers stop routing here
        // while tonic finishes the RPCs already in flight.
        health
            .set_not_serving::<RateLimiterServer<LimiterService<C>>>()
            .await;
        health
            .set_not_serving::<RateLimitServiceServer<EnvoyService<C>>>()
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tracing::info!("NOT_SERVING; draining");
    };

    tracing::info!(%addr, mtls = grpc_tls.is_some(), "rate-limiter serving");
    let router = tonic::transport::Server::builder()
        // Outermost: the trace span must cover health checks and Acquire alike.
        .layer(GrpcTraceLayer)
        .add_service(health_service)
        .add_service(limiter)
        .add_service(envoy);
    let served = match grpc_tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls_incoming(listener, tls), signal)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(nodelay_incoming(listener), signal)
                .await
        }
    };
    if let Some(h) = health_only
        && let Err(e) = h.stop().await
    {
        tracing::warn!(error = format!("{e:#}"), "health-only listener failed");
    }
    served?;
    tracing::info!("drained");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use clap::Parser as _;

    #[test]
    fn grpc_mtls_required_unless_insecure() {
        let none = Args::try_parse_from(["l"]).unwrap();
        let err = none.grpc_tls().unwrap_err().to_string();
        assert!(err.contains("gRPC requires mutual TLS"), "{err}");
        let insecure = Args::try_parse_from(["l", "--insecure-plaintext-grpc"]).unwrap();
        assert!(insecure.grpc_tls().unwrap().is_none());
        let all = Args::try_parse_from([
            "l",
            "--grpc-tls-cert",
            "c.pem",
            "--grpc-tls-key",
            "k.pem",
            "--grpc-tls-ca",
            "ca.pem",
            "--health-listen",
            "127.0.0.1:7201",
        ])
        .unwrap();
        assert_eq!(all.health_listen, Some("127.0.0.1:7201".parse().unwrap()));
        let tls = all.grpc_tls().unwrap().unwrap();
        assert_eq!(tls.files.key, PathBuf::from("k.pem"));
        assert_eq!(tls.peers.to_string(), "spiffe://keymesh/edge");
        let some = Args::try_parse_from(["l", "--grpc-tls-key", "k.pem"]).unwrap();
        let err = some.grpc_tls().unwrap_err().to_string();
        assert!(
            err.contains("missing --grpc-tls-cert, --grpc-tls-ca"),
            "{err}"
        );
    }
}
