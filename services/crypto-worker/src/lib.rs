//! keymesh crypto-worker: the only process that talks PKCS#11.
//!
//! A pool of logged-in sessions, each on its own OS thread behind a bounded
//! queue ([`pool`]; the queue and threads generic in [`lane`]), serves
//! the `keymesh.crypto.v1.CryptoWorker` gRPC API ([`service`]): AES-256-GCM
//! with worker-chosen 12-byte IVs under keys found by label and cached, by
//! default with per-process session-object copies for the crypto
//! ([`key_cache`]). Next to it, `keymesh.crypto.v1.KeyVault` ([`vault`])
//! serves customer master keys stored outside the HSM wrapped under an
//! HSM-resident domain key, whose unwrapped objects are cached
//! ([`wrapped`]), plus data keys, data key pairs ([`keypair`]) and random
//! bytes. The PKCS#11 calls themselves (token, sessions, key objects,
//! wrapping, AES-GCM, the `CKR_*` mapping) live in [`keymesh_pkcs11`]; each
//! session thread holds its session through [`session`], the one place that
//! drops and re-opens a session after a failure. Failures map to gRPC codes
//! plus a machine-readable reason in one place ([`error`]). Operators
//! disable keys through the key-status file ([`key_status`]; its format is
//! `keymesh_contracts::key_status`, shared with keymeshctl), and a deep health check ([`health`]) drives both GetHealth
//! and `grpc.health.v1`. HSM latency, session-pool use and health are
//! exported as Prometheus metrics ([`metrics`]). Flags and environment are
//! validated once into a [`Config`] ([`config`]); [`serve`] runs it all on
//! a pre-bound listener until a shutdown future resolves, owning the
//! background tasks (key-status watch, health checker, metrics sampler,
//! unwrapped-key sweeper, certificate reload: [`tasks`]) and stopping them
//! after the drain.

pub mod config;
pub mod error;
pub mod health;
pub mod key_cache;
pub mod key_status;
pub mod keypair;
pub mod lane;
pub mod metrics;
pub mod pool;
pub mod service;
pub mod session;
pub mod tasks;
pub mod vault;
pub mod wrapped;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::context::Pkcs11;
use keymesh_common::grpc_tls::{GrpcTls, tls_incoming};
use keymesh_common::net::nodelay_incoming;
use keymesh_common::propagation::GrpcTraceLayer;
use keymesh_proto::crypto::v1::crypto_worker_server::CryptoWorkerServer;
use keymesh_proto::crypto::v1::key_vault_server::KeyVaultServer;
use tokio::net::TcpListener;

pub use config::{Args, Config, HsmArgs};
pub use error::Error;

use crate::health::HealthState;
use crate::pool::Pool;

/// How often the key-status file is checked for changes ("workers pick it up
/// within a second").
pub const KEY_STATUS_POLL: Duration = Duration::from_millis(500);

/// Load the PKCS#11 module (one `C_Initialize` per process), open the token
/// and serve until `shutdown` resolves; then report NOT_SERVING, keep
/// serving for `drain_delay`, drain in-flight RPCs and close every session.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let module = config.pkcs11_module.clone();
    let ctx = tokio::task::spawn_blocking(move || keymesh_pkcs11::token::load_module(&module))
        .await?
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot load PKCS#11 module {}: {e:#}",
                config.pkcs11_module.display()
            )
        })?;
    serve_with_module(config, ctx, listener, shutdown).await
}

/// Judge the start-up domain-key lookup (`found`: its KCV) against
/// `--domain-key-kcv`: a different or missing key with a pinned KCV stops
/// the worker, naming both values.
fn check_domain_key(config: &Config, found: Result<String, Error>) -> anyhow::Result<()> {
    let label = &config.domain_key_label;
    match (found, config.domain_key_kcv.as_deref()) {
        (Ok(kcv), Some(expected)) if kcv != expected => anyhow::bail!(
            "domain key {label:?} on the HSM has KCV {kcv}, but --domain-key-kcv expects \
             {expected}: this token holds another domain key than the one the stored keys \
             are wrapped under (restore the token from its backup; see docs/SRE.md)"
        ),
        (Ok(kcv), expected) => {
            tracing::info!(domain_key = %label, kcv, pinned = expected.is_some(), "domain key found");
        }
        (Err(e), Some(expected)) => anyhow::bail!(
            "domain key {label:?} is not usable on the HSM ({e}), but --domain-key-kcv \
             expects KCV {expected} (restore the token from its backup; see docs/SRE.md)"
        ),
        (Err(e), None) => tracing::warn!(
            domain_key = %label,
            error = %e,
            "KeyVault requests fail until the domain key exists (keymeshctl domain-key init)"
        ),
    }
    Ok(())
}

/// [`serve`] with an already initialised module, for processes (tests) that
/// run several servers or prepare the token first: `C_Initialize` may only
/// happen once per process.
pub async fn serve_with_module(
    config: Config,
    ctx: Pkcs11,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let label = config.token_label.clone();
    let pin = config.pin.clone();
    let sessions = config.sessions;
    let slow_lane = config.slow_lane;
    let key_options = key_cache::KeyCacheOptions {
        session_copies: config.session_key_copies,
        revalidate: config.key_revalidate,
    };
    let (hsm, pool, threads) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let hsm = Arc::new(keymesh_pkcs11::Hsm::open(ctx, &label, pin)?);
        let (pool, threads) = Pool::start_lanes(
            Arc::clone(&hsm),
            sessions,
            slow_lane,
            key_options,
            wrapped::UnwrappedKeyOptions::default(),
        )?;
        Ok((hsm, pool, threads))
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot open token {:?}: {e:#}", config.token_label))?;
    tracing::info!(
        token = ?hsm.token(),
        sessions,
        slow_lane_sessions = slow_lane.sessions,
        slow_lane_queue = slow_lane.queue,
        session_key_copies = key_options.session_copies,
        key_revalidate_secs = key_options.revalidate.as_secs(),
        "HSM session pool ready"
    );

    // KeyVault needs the domain key; XKS-only deployments do not, so a
    // missing one is worth a warning, not a failed start, unless the
    // operator pinned its check value.
    let domain_key = config.domain_key_label.clone();
    let found = pool
        .run_waiting(None, move |ctx| {
            ctx.with_session(|s, _| Ok(keymesh_pkcs11::wrap::domain_key_check(s, &domain_key)?))
        })
        .await;
    check_domain_key(&config, found)?;

    // Every task started from here on is owned by `background`: stopped
    // after the drain, or aborted if this function returns early.
    let mut background = tasks::Background::default();
    let key_status = key_status::KeyStatusWatch::new(config.key_status_file.clone())?;
    background.add("key-status watch", key_status.spawn(KEY_STATUS_POLL));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Arc::new(HealthState::default());
    // A first check before accepting traffic, so probes have an answer.
    health::check_and_publish(&pool, &health, &reporter).await;
    background.add(
        "health checker",
        health::spawn_checker(
            pool.clone(),
            Arc::clone(&health),
            reporter.clone(),
            config.health_interval,
        ),
    );

    metrics::describe();
    background.add(
        "metrics sampler",
        tasks::spawn_sampler(pool.clone(), Arc::clone(&health)),
    );
    background.add(
        "unwrapped-key sweeper",
        tasks::spawn_sweeper(
            pool.clone(),
            wrapped::sweep_interval(wrapped::UnwrappedKeyOptions::default().idle),
        ),
    );
    let vault = vault::VaultService::new(pool.clone(), &config.domain_key_label);

    let service = service::CryptoService::new(
        pool,
        key_status,
        Arc::clone(&health),
        config.worker_id.clone(),
        hsm.token(),
    );

    let drain_health = Arc::clone(&health);
    let drain_delay = config.drain_delay;
    let drain = async move {
        shutdown.await;
        // Probes see NOT_SERVING before connections start closing.
        drain_health.start_draining(&reporter).await;
        // Keep answering while the edges learn of NOT_SERVING (Watch stream
        // at once, Check within a second) and route elsewhere: closing the
        // listener first would turn requests already on their way here into
        // transport errors, which an Encrypt cannot safely retry.
        if !drain_delay.is_zero() {
            tracing::info!(
                delay_ms = drain_delay.as_millis(),
                "NOT_SERVING; still serving during the drain delay"
            );
            tokio::time::sleep(drain_delay).await;
        }
        tracing::info!("draining in-flight requests");
    };

    // Loaded before serving: a worker configured for mTLS must not start
    // without its certificates (or fall back to plaintext).
    let grpc_tls = config.grpc_tls.clone().map(GrpcTls::load).transpose()?;
    if let Some(tls) = &grpc_tls {
        background.add(
            "mesh TLS reload",
            tls.spawn_watch(keymesh_common::grpc_tls::RELOAD_INTERVAL),
        );
    } else {
        keymesh_common::grpc_tls::warn_insecure_plaintext("crypto-worker");
    }
    // Probes only: the same health reporter, none of the HSM services.
    let health_only =
        keymesh_common::health_listener::start(config.health_listen, health_service.clone())
            .await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        worker_id = %config.worker_id,
        mtls = grpc_tls.is_some(),
        allowed_peers = %grpc_tls.as_ref().map(|t| t.peers().to_string()).unwrap_or_default(),
        "crypto-worker serving"
    );
    let router = tonic::transport::Server::builder()
        // Outermost: one span per RPC, parented on the caller's traceparent.
        .layer(GrpcTraceLayer)
        .add_service(health_service)
        .add_service(CryptoWorkerServer::new(service))
        .add_service(KeyVaultServer::new(vault));
    let served = match grpc_tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls_incoming(listener, tls), drain)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(nodelay_incoming(listener), drain)
                .await
        }
    };
    if let Some(h) = health_only
        && let Err(e) = h.stop().await
    {
        tracing::warn!(error = format!("{e:#}"), "health-only listener failed");
    }

    // The sampler, sweeper and checker hold pool handles: the session
    // threads stop only once they are gone.
    background.stop().await;
    // The router (and its pool handles) is gone: the queue closes, and each
    // session thread finishes queued jobs and closes its session.
    tokio::task::spawn_blocking(move || threads.join()).await?;
    served?;
    tracing::info!("crypto-worker stopped");
    Ok(())
}
