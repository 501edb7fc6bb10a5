//! Everything a request needs, built once from validated config in `main`
//! and passed explicitly (no globals).

use std::sync::Arc;
use std::time::Duration;

use keymesh_common::grpc_tls::{GrpcTls, GrpcTlsFiles, MeshTls};
use keymesh_common::mesh_identity::AllowedPeers;
use keymesh_common::reload::Reloadable;
use keymesh_contracts::keystores::Keystores;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::mesh::{GrpcClientTls, WorkerPool, channel_with};
use crate::tasks::Tasks;
use keymesh_limiter_client::{LimiterClient, Transport};
use keymesh_xks_auth::Verifier;
use keymesh_xks_auth::policy::PolicyFile;

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
    /// Every background task of this edge (its own and the dialects'),
    /// stopped by [`AppState::stop`].
    pub tasks: Tasks,
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
    /// probes), owned in [`AppState::tasks`] until [`AppState::stop`].
    pub fn start(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Arc<Self>> {
        let tasks = Tasks::default();
        let reload = Duration::from_millis(config.reload_interval_ms);
        let allow_wildcard = config.allow_wildcard_keystores;
        let keystores = Reloadable::load(&config.keystores_file, move |b: &[u8]| {
            crate::keystores::load(b, allow_wildcard)
        })?;
        tasks.own(keystores.spawn_watch(reload));
        let policy = match &config.policy_file {
            Some(p) => {
                let r = Reloadable::load(p, PolicyFile::parse)?;
                tasks.own(r.spawn_watch(reload));
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
                    tasks.own(tls.spawn_watch(keymesh_common::grpc_tls::RELOAD_INTERVAL));
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
        // The limiter client judges transport failures and probes health
        // exactly as the worker pool does.
        let limiter = LimiterClient::new(
            replicas,
            config.limiter_failure_policy,
            config.limiter_max_lease,
            Transport {
                is_transport_failure: crate::mesh::is_transport_failure,
                serving: |channel, timeout| Box::pin(crate::mesh::serving(channel, timeout)),
            },
        );
        // Readiness needs a limiter replica serving: probed on the workers'
        // one-second rhythm, with the same timeout.
        let prober = limiter.clone();
        tasks.own(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                prober.probe(crate::mesh::PROBE_TIMEOUT).await;
            }
        }));
        let workers = crate::mesh::start(&config, worker_tls, &tasks)?;
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
            tasks,
        }))
    }

    /// `/readyz`: at least one limiter replica serving (a lost replica only
    /// moves its keys to another) and at least one worker admitted.
    pub fn ready(&self) -> bool {
        self.limiter.ready() && self.workers.any_admitted()
    }

    /// Stop every background task: the owned ones, then the worker health
    /// watches (after the resolver, which could start new ones).
    pub fn stop(&self) {
        self.tasks.stop();
        self.workers.stop();
    }
}

/// A state dropped without [`AppState::stop`] (a test's, or one whose
/// server failed to start) still ends its tasks and health watches.
impl Drop for AppState {
    fn drop(&mut self) {
        self.stop();
    }
}
