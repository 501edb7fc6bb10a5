//! The crypto-worker pool (crate `keymesh-worker-pool`) as this edge runs
//! it: built from `edge.toml`, started with the limiter's prober beside it
//! (one probe interval for every gRPC dependency), its tasks owned by the
//! state. Readiness combines both in [`crate::state::AppState::ready`].

use std::sync::Arc;
use std::time::Duration;

pub use keymesh_worker_pool::{
    FleetMember, GrpcClientTls, PROBE_TIMEOUT, PoolConfig, PoolError, Retry, Source, Worker,
    WorkerPool, WorkerRpc, channel, channel_with, grpc, is_transport_failure, never_sent, serving,
};

use crate::config::Config;
use crate::limiter::LimiterClient;
use crate::tasks::Tasks;

/// How often every worker and limiter replica is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The pool for `config.workers`, with its prober, resolver and health
/// watches running and owned by `tasks`, and a prober for the limiter
/// replicas on the same interval.
pub fn start(
    config: &Config,
    tls: Option<GrpcClientTls>,
    limiter: &LimiterClient,
    tasks: &Tasks,
) -> anyhow::Result<Arc<WorkerPool>> {
    let workers = Arc::new(WorkerPool::new(PoolConfig {
        workers: config.workers.clone(),
        probe_interval: PROBE_INTERVAL,
        resolve_interval: Duration::from_millis(config.worker_resolve_interval_ms),
        tls,
    })?);
    for task in workers.start() {
        tasks.own(task);
    }
    let limiter = limiter.clone();
    tasks.own(tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            limiter.probe(PROBE_TIMEOUT).await;
        }
    }));
    Ok(workers)
}
