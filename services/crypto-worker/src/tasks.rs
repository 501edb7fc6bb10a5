//! The worker's background tasks that read the session pool, wired here so
//! the modules they report to ([`crate::metrics`]) or feed
//! ([`crate::wrapped`]) need not know the pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::health::HealthState;
use crate::metrics;
use crate::pool::Pool;

/// Refresh the pool and health gauges ([`metrics::spawn_sampler`]) until
/// aborted.
pub fn spawn_sampler(pool: Pool, health: Arc<HealthState>) -> JoinHandle<()> {
    let sizes = metrics::PoolSizes {
        sessions: pool.sessions(),
        capacity: pool.capacity(),
        slow_sessions: pool.slow_sessions(),
        slow_capacity: pool.slow_capacity(),
    };
    metrics::spawn_sampler(sizes, move || metrics::Sample {
        queued: pool.queued(),
        busy: pool.busy(),
        slow_queued: pool.slow_queued(),
        slow_busy: pool.slow_busy(),
        unwrapped_keys: pool.unwrapped_keys(),
        health: health.status(Instant::now()).0,
    })
}

/// Sweep idle unwrapped keys every `every` until aborted. The sweep runs as
/// a pool job, since destroying objects calls the HSM; a full queue skips a
/// round.
pub fn spawn_sweeper(pool: Pool, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = pool.sweep_unwrapped().await {
                tracing::debug!(error = %e, "unwrapped-key sweep skipped");
            }
        }
    })
}
