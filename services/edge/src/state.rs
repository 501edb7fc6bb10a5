//! Everything a request needs, built once from validated config in `main`
//! and passed explicitly (no globals).

use std::sync::Arc;
use std::time::Duration;

use keymesh_common::grpc_tls::{GrpcTls, GrpcTlsFiles, MeshTls};
use keymesh_common::mesh_identity::AllowedPeers;
use keymesh_common::reload::Reloadable;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::keystores::Keystores;
use crate::limiter::LimiterClient;
use crate::mesh::{GrpcClientTls, WorkerPool, channel_with};
use crate::xks::policy::PolicyFile;
use crate::xks::sigv4::Verifier;

pub struct AppState {
    pub config: Config,
    pub keystores: Arc<Reloadable<Keystores>>,
    pub policy: Option<Arc<Reloadable<PolicyFile>>>,
    pub verifier: Verifier,
    pub workers: Arc<WorkerPool>,
    pub limiter: LimiterClient,
    pub metrics: Option<PrometheusHandle>,
    /// Budgets for callers not yet authenticated, shared by both dialects.
    pub abuse: crate::http::abuse::Abuse,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish()
    }
}

impl AppState {
    /// Build the state and start its background tasks (file watches, health
    /// probes); they stop when the runtime does.
    pub fn start(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Arc<Self>> {
        let reload = Duration::from_millis(config.reload_interval_ms);
        let allow_wildcard = config.allow_wildcard_keystores;
        let keystores = Reloadable::load(&config.keystores_file, move |b: &[u8]| {
            Keystores::parse_with(b, allow_wildcard)
        })?;
        keystores.spawn_watch(reload);
        let policy = match &config.policy_file {
            Some(p) => {
                let r = Reloadable::load(p, PolicyFile::parse)?;
                r.spawn_watch(reload);
                Some(r)
            }
            None => None,
        };
        // Service mTLS: one certificate for every worker and limiter
        // channel, reloaded in place (new connections use the new
        // certificates), with each kind of peer pinned to its identities.
        let (worker_tls, limiter_tls) = match &config.grpc_tls {
            Some(t) => {
                let dial = |peers: &[String]| -> anyhow::Result<GrpcClientTls> {
                    let tls = GrpcTls::load(MeshTls {
                        files: GrpcTlsFiles {
                            cert: t.cert_file.clone(),
                            key: t.key_file.clone(),
                            ca: t.ca_file.clone(),
                        },
                        peers: AllowedPeers::parse(peers).map_err(|e| anyhow::anyhow!(e))?,
                    })?;
                    tls.spawn_watch(keymesh_common::grpc_tls::RELOAD_INTERVAL);
                    Ok(GrpcClientTls { tls })
                };
                (
                    Some(dial(&t.worker_identities)?),
                    Some(dial(&t.limiter_identities)?),
                )
            }
            None => {
                keymesh_common::grpc_tls::warn_insecure_plaintext("edge");
                (None, None)
            }
        };
        let replicas = config
            .limiter_endpoints()
            .iter()
            .map(|url| Ok((url.clone(), channel_with(url, limiter_tls.as_ref())?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let limiter = LimiterClient::new(
            replicas,
            config.limiter_failure_policy,
            config.limiter_max_lease,
        );
        // The worker pool's prober also probes the limiter replicas, and its
        // readiness needs one of them.
        let workers = Arc::new(WorkerPool::with_tls(
            &config.workers,
            limiter.clone(),
            worker_tls,
        )?);
        workers.start(
            Duration::from_secs(1),
            Duration::from_millis(config.worker_resolve_interval_ms),
        );
        let verifier = Verifier {
            max_skew: Duration::from_secs(config.max_skew_secs),
            regions: config.regions.clone(),
        };
        Ok(Arc::new(Self {
            abuse: crate::http::abuse::Abuse::new(config.abuse),
            config,
            keystores,
            policy,
            verifier,
            workers,
            limiter,
            metrics,
        }))
    }
}
