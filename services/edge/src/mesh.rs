//! The crypto-worker pool (crate `keymesh-worker-pool`) as this edge runs
//! it: built from `edge.toml`, its prober, resolver and health watches
//! owned by the state's tasks. Readiness combines it with the limiter's in
//! [`crate::state::AppState::ready`].

use std::sync::Arc;
use std::time::Duration;

pub use keymesh_worker_pool::{
    FleetMember, GrpcClientTls, PROBE_TIMEOUT, PoolConfig, PoolError, Retry, Source, Worker,
    WorkerPool, WorkerRpc, channel, channel_with, grpc, is_transport_failure, never_sent, serving,
};

use crate::config::Config;
use crate::tasks::Tasks;

/// The pool for `config.workers`, dialled over `tls` (the `[grpc_tls]`
/// worker identity), probed every second and re-resolved every
/// `worker_resolve_interval_ms`, with its tasks running and owned by `tasks`.
pub fn start(
    config: &Config,
    tls: Option<GrpcClientTls>,
    tasks: &Tasks,
) -> anyhow::Result<Arc<WorkerPool>> {
    let workers = Arc::new(WorkerPool::new(PoolConfig {
        workers: config.workers.clone(),
        probe_interval: Duration::from_secs(1),
        resolve_interval: Duration::from_millis(config.worker_resolve_interval_ms),
        tls,
    })?);
    for task in workers.start() {
        tasks.own(task);
    }
    Ok(workers)
}
